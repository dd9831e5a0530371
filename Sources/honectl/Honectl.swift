import ArgumentParser
import Llama

/// `honectl` — Hone's operator CLI. Exit codes: 0 success, 1 the operation failed
/// (database error, refused change), 2 bad usage.
@main
struct Honectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "honectl",
        abstract: "Operate Hone: migrate the database, inspect and manage the queue, train and try adapters.",
        subcommands: [Migrate.self, Generate.self, Tokenize.self, Train.self])

    static func main() async {
        OpenBLASEnvironment.ensureCoreType()
        await main(nil)
    }
}
