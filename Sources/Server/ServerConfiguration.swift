/// The HTTP server's settings, with documented defaults, validated once at start.
public struct ServerConfiguration: Sendable {
    /// Address to bind; `127.0.0.1` keeps the API on this machine.
    public var host: String = "127.0.0.1"
    /// Port; 0 picks a free one (tests).
    public var port: Int = 8080
    /// Largest request body accepted (413 above).
    public var maxBodyBytes: Int = 1 << 20
    /// Largest `max_tokens` a request may ask for (400 above).
    public var maxCompletionTokens: Int = 4096
    /// Requests in flight at once; more get 429 with Retry-After.
    public var maxConcurrentRequests: Int = 64
    /// Largest `n` (choices per request).
    public var maxChoices: Int = 8
    /// Most prompt tokens a request may carry (400 above); the context length bounds it too.
    public var maxPromptTokens: Int = 8192
    /// Seconds between SSE comment heartbeats (`: keep-alive`) while a stream waits for
    /// its next token, so proxies and clients do not time out an idle connection.
    public var heartbeatSeconds: Double = 10

    public init() {}

    /// Throws a readable error for settings that cannot work.
    public func validate() throws {
        guard (0...65535).contains(port) else { throw ServerConfigurationError("port \(port) is not in 0-65535") }
        guard maxBodyBytes >= 1024 else { throw ServerConfigurationError("the body limit must be at least 1024 bytes") }
        guard maxCompletionTokens > 0, maxConcurrentRequests > 0, maxChoices > 0, maxPromptTokens > 0, heartbeatSeconds > 0 else {
            throw ServerConfigurationError("limits must be positive")
        }
    }
}

/// A server setting that cannot work.
public struct ServerConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
