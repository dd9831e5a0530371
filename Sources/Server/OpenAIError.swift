import Foundation
import Hummingbird
import JSON
import Logging

/// OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`) with its HTTP
/// status: the only shape in which this server reports a failure.
public struct OpenAIError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Extra headers, e.g. Retry-After on 429.
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error",
                param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    var json: JSONValue {
        .object(["error": .object([
            "message": .string(message), "type": .string(type),
            "param": param.map(JSONValue.string) ?? .null, "code": code.map(JSONValue.string) ?? .null,
        ])])
    }

    var response: Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: json.jsonText)))
    }

    static func invalidType(_ param: String, expected: String, got value: JSONValue) -> OpenAIError {
        OpenAIError(.badRequest, "Invalid type for '\(param)': expected \(expected), but got \(article(value.typeName)) instead.",
                    param: param, code: "invalid_type")
    }

    static func article(_ type: String) -> String {
        ["a", "e", "i", "o", "u"].contains(type.prefix(1)) ? "an \(type)" : "a \(type)"
    }
}

/// Turns every error into an OpenAI error object: the handlers' own, the router's
/// (unknown URL, wrong method), body limits, and anything unexpected (500, logged).
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as OpenAIError {
            return error.response
        } catch let error as HTTPError {
            switch error.status {
            case .notFound:
                return OpenAIError(.notFound, "Unknown request URL: \(request.method) \(request.uri.path).",
                                   code: "unknown_url").response
            case .methodNotAllowed:
                return OpenAIError(.methodNotAllowed, "Method \(request.method) is not allowed for \(request.uri.path).",
                                   code: "method_not_allowed").response
            case .contentTooLarge:
                return OpenAIError(.contentTooLarge, "The request body is too large.", code: "request_too_large").response
            default:
                return OpenAIError(error.status, error.body ?? error.status.reasonPhrase,
                                   type: error.status.code >= 500 ? "server_error" : "invalid_request_error").response
            }
        } catch {
            logger.error("request failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(error)"])
            return OpenAIError(.internalServerError, "The server had an error while processing your request.",
                               type: "server_error").response
        }
    }
}
