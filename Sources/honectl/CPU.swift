import ArgumentParser
import Foundation
import JSON
import Tensor

/// `honectl cpu` — what this machine computes on: the CPU, the kernel level in use and the
/// highest it runs, and OpenBLAS's core type. Scripts read the core type from here instead
/// of deciding it themselves (`ops/test` exports it for the test process).
struct CPU: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the CPU, the kernel level in use (HONE_KERNELS) and OpenBLAS's core type.")

    @Flag(help: "Print JSON instead of a table, for scripts.")
    var json = false

    func run() throws {
        let compute = CPUEnvironment.current
        if json {
            Output.json(.object([
                "cpu": .string(compute.model), "cpu_kernels": .string(compute.cpuLevel.description),
                "kernels": .string(compute.kernelLevel.description), "blas_core_type": .string(compute.blasCoreType),
            ]))
        } else {
            print(Output.table(["CPU", "KERNELS", "CPU RUNS", "BLAS CORE TYPE"],
                               [[compute.model, compute.kernelLevel.description,
                                 KernelLevel.allCases.filter { $0 <= compute.cpuLevel }.map(\.description).joined(separator: ","),
                                 compute.blasCoreType]]), terminator: "")
        }
    }
}
