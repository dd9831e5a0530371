import Foundation
import Generation
import Hummingbird
import JSON
import Logging
import Synchronization

/// Hone's OpenAI-compatible HTTP API: `/v1/chat/completions`, `/v1/completions`,
/// `/v1/models`, `/healthz`, `/readyz`, `/metrics`, and the operators' `/status` page.
/// Every error is an OpenAI error object.
public struct HoneServer: Sendable {
    let configuration: ServerConfiguration
    let holder: SnapshotHolder
    let scheduler: BatchScheduler
    let logger: Logger
    let recorder: CompletionRecorder
    /// The daemon's part of `/metrics` and `/status` (nil: the server alone, no status page).
    let report: OperatorReport?
    /// Who may use what; empty: open (the daemon keeps it in step with `hone.api_keys`).
    let keys: APIKeys
    let inFlight = InFlight()
    /// What `/metrics` reports.
    public let metrics = ServerMetrics()

    public init(configuration: ServerConfiguration, holder: SnapshotHolder, scheduler: BatchScheduler,
                recorder: CompletionRecorder = NoCompletionRecorder(), report: OperatorReport? = nil,
                keys: APIKeys = APIKeys(), logger: Logger) {
        self.configuration = configuration
        self.report = report
        self.keys = keys
        self.holder = holder
        self.scheduler = scheduler
        self.recorder = recorder
        self.logger = logger
    }

    /// The router with every route and the error middleware.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: OpenAIErrorMiddleware(logger: logger))
        router.get("/healthz") { _, _ in Self.json(.object(["status": .string("ok")])) }
        router.get("/readyz") { _, _ in
            guard let snapshot = holder.snapshot, holder.isReady else {
                throw OpenAIError(.serviceUnavailable, holder.snapshot == nil ? "The model is still loading." : "The adapters' versions are still loading.",
                                  type: "server_error", code: "model_not_ready")
            }
            return Self.json(.object(["status": .string("ready"), "version": .string(snapshot.version)]))
        }
        router.get("/v1/models") { request, _ in
            let access = try authorize(request)
            let snapshot = try ready()
            let visible = snapshot.servedModelIDs.filter { id in snapshot.resolve(id).map { access.mayUse($0.adapter?.name) } ?? false }
            let models: [JSONValue] = visible.map { id in
                .object(["id": .string(id), "object": .string("model"), "created": .int(0), "owned_by": .string("hone")])
            }
            return Self.json(.object(["object": .string("list"), "data": .array(models)]))
        }
        router.get("/metrics") { request, _ in
            try authorizeOperator(request)
            var gauges = ServerMetrics.Gauges()
            if let snapshot = holder.snapshot {
                gauges.versions = snapshot.servedModelIDs.compactMap { id in snapshot.resolve(id).map { (id, $0.version) } }
                gauges.adapterWeights = snapshot.adapters.sorted { $0.key < $1.key }.map { name, served in
                    (name, served.shards.shards.count, served.shards.byteCount)
                }
            }
            gauges.swaps = holder.swaps
            gauges.refusals = holder.refusals
            gauges.schedulerLoad = scheduler.load
            gauges.promptPrefix = scheduler.prefixes.counts
            gauges.inFlight = inFlight.count.load(ordering: .relaxed)
            gauges.completionLog = recorder.health
            gauges.compute = scheduler.compute.usage()
            let text = metrics.render(gauges) + (await report?.metricsText() ?? "")
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("/status") { request, _ in
            try authorizeOperator(request, challenge: #"Basic realm="hone operators", charset="UTF-8""#)
            guard let report else {
                throw OpenAIError(.notFound, "This server has no status page (it runs without the daemon's database).",
                                  type: "invalid_request_error", code: "not_found")
            }
            let html = await report.statusPage(serving: metrics.summary(inFlight: inFlight.count.load(ordering: .relaxed),
                                                                        schedulerLoad: scheduler.load))
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(string: html)))
        }
        router.post("/v1/chat/completions") { request, _ in try await measured("/v1/chat/completions") { try await complete(request, chat: true) } }
        router.post("/v1/completions") { request, _ in try await measured("/v1/completions") { try await complete(request, chat: false) } }
        return router
    }

    /// An application serving `router()` on the configured address.
    public func application(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        Application(
            router: router(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "hone"),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// Counts the request and its latency under `endpoint`, errors included (streams are
    /// counted when their headers go out; their tokens when they end).
    func measured(_ endpoint: String, _ body: () async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await body()
            metrics.request(endpoint: endpoint, status: Int(response.status.code), seconds: (ContinuousClock.now - start) / .seconds(1))
            return response
        } catch let error as OpenAIError {
            metrics.request(endpoint: endpoint, status: Int(error.status.code), seconds: (ContinuousClock.now - start) / .seconds(1))
            throw error
        } catch {
            metrics.request(endpoint: endpoint, status: 500, seconds: (ContinuousClock.now - start) / .seconds(1))
            throw error
        }
    }

    /// The request's access; 401 (OpenAI's error object) when a key is needed and missing or
    /// wrong. `challenge` is the WWW-Authenticate scheme offered.
    func authorize(_ request: Request, challenge: String = "Bearer") throws -> APIKeys.Access {
        let access = keys.access(authorization: request.headers[.authorization])
        guard case .denied(let missing) = access else { return access }
        var error = missing
            ? OpenAIError(.unauthorized, "You didn't provide an API key. Provide it in an Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY); operators create keys with `honectl keys create`.")
            : OpenAIError(.unauthorized, "Incorrect API key provided.", code: "invalid_api_key")
        error.headers[.wwwAuthenticate] = challenge
        throw error
    }

    /// Operator pages need an operator's key once keys exist (403 for another valid key).
    /// `/status` offers a browser Basic auth (any user name, the key as the password);
    /// `/metrics` asks for Bearer, as Prometheus sends it.
    func authorizeOperator(_ request: Request, challenge: String = "Bearer") throws {
        guard try authorize(request, challenge: challenge).isOperator else {
            throw OpenAIError(.forbidden, "This key may not read the operator pages; use an operator's key (`honectl keys create --operator`).",
                              code: "permission_denied")
        }
    }

    func ready() throws -> ModelSnapshot {
        guard let snapshot = holder.snapshot else {
            throw OpenAIError(.serviceUnavailable, "The model is still loading.", type: "server_error", code: "model_not_ready")
        }
        return snapshot
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: value.jsonText)))
    }
}

/// Requests being answered, for admission control.
final class InFlight: Sendable {
    let count = Atomic<Int>(0)

    /// Takes a place, or nil when `limit` are taken.
    func enter(limit: Int) -> Bool {
        if count.wrappingAdd(1, ordering: .relaxed).newValue > limit {
            count.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func leave() { count.wrappingSubtract(1, ordering: .relaxed) }
}
