import CKernels
import Foundation

/// This process's resources as Prometheus' standard `process_*` families name them, read
/// from Linux's /proc (nil elsewhere): what an operator watches for leaks over weeks.
public struct ProcessMetrics: Sendable, Equatable {
    public var residentBytes: Double
    public var virtualBytes: Double
    public var cpuSeconds: Double
    public var openDescriptors: Int
    public var maxDescriptors: Int?
    public var threads: Int
    /// Seconds since the Unix epoch.
    public var startTime: Double

    /// The current figures, or nil when /proc/self cannot be read.
    public static func current() -> ProcessMetrics? {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
        let pages = statm.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        guard pages.count >= 2, let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ").map(String.init)
        // fields[0] is field 3 (state): field n is fields[n - 3].
        func field(_ n: Int) -> Double? { n - 3 < fields.count ? Double(fields[n - 3]) : nil }
        let page = Double(sysconf(Int32(_SC_PAGESIZE))), ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        guard let utime = field(14), let stime = field(15), let threads = field(20), let started = field(22),
              let boot = bootTime else { return nil }
        var limit = rlimit()
        let maxDescriptors = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : nil
        return ProcessMetrics(residentBytes: pages[1] * page, virtualBytes: pages[0] * page, cpuSeconds: (utime + stime) / ticks,
                              openDescriptors: fds.count, maxDescriptors: maxDescriptors, threads: Int(threads),
                              startTime: boot + started / ticks)
    }

    /// Peak resident memory (VmHWM) since the process started or since the last
    /// `resetPeakResident()`; nil when /proc/self/status cannot be read.
    public static func peakResidentBytes() -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kB = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap({ Double($0) })
        else { return nil }
        return kB * 1024
    }

    /// Starts a new peak for `peakResidentBytes()` at the current resident size (Linux's
    /// /proc/self/clear_refs, value 5), so one phase's peak can be read on its own.
    public static func resetPeakResident() {
        guard let file = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return }
        try? file.write(contentsOf: Data("5".utf8))
        try? file.close()
    }

    /// The C heap: bytes the program holds, and bytes free inside the allocator's arenas
    /// (resident until trimmed); nil where the C library cannot tell.
    public static func heapUsage() -> (inUse: Double, free: Double)? {
        var inUse = 0, free = 0
        guard hone_heap_usage(&inUse, &free) != 0 else { return nil }
        return (Double(inUse), Double(free))
    }

    /// The boot time in seconds since the epoch (`btime` in /proc/stat).
    private static let bootTime: Double? = {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }) else { return nil }
        return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
    }()

    /// The `process_*` families in exposition text.
    func render(into out: inout PrometheusText) {
        out.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
        out.sample("process_resident_memory_bytes", [], residentBytes)
        out.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
        out.sample("process_virtual_memory_bytes", [], virtualBytes)
        out.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
        out.sample("process_cpu_seconds_total", [], cpuSeconds)
        out.family("process_open_fds", "gauge", "Number of open file descriptors.")
        out.sample("process_open_fds", [], Double(openDescriptors))
        if let maxDescriptors {
            out.family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
            out.sample("process_max_fds", [], Double(maxDescriptors))
        }
        out.family("process_threads", "gauge", "Number of OS threads in the process.")
        out.sample("process_threads", [], Double(threads))
        out.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
        out.sample("process_start_time_seconds", [], startTime)
        if let heap = Self.heapUsage() {
            out.family("hone_heap_bytes", "gauge", "C heap bytes held by the program (in_use) and free inside the allocator's arenas (free).")
            out.sample("hone_heap_bytes", [("state", "in_use")], heap.inUse)
            out.sample("hone_heap_bytes", [("state", "free")], heap.free)
        }
    }
}
