import Llama
import Tokenizer

/// An immutable model a request runs on from start to end: weights, tokenizer, and the
/// version that answers (`system_fingerprint`). Swapping installs a new snapshot; requests
/// holding the old one finish on it and it is freed with its last reference.
public final class ModelSnapshot: Sendable {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    /// The model id clients name, e.g. `smollm2`.
    public let modelID: String
    /// The version that answers, e.g. `base` or `support@v41`.
    public let version: String
    public let chatTemplate: ChatTemplate

    public init(model: LlamaModel, tokenizer: Tokenizer, modelID: String, version: String) {
        self.model = model
        self.tokenizer = tokenizer
        self.modelID = modelID
        self.version = version
        chatTemplate = ChatTemplate(template: tokenizer.chatTemplate)
    }
}
