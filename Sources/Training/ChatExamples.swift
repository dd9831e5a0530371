import Foundation
import JSON
import Llama
import Tokenizer

/// Training data in OpenAI's chat fine-tuning format, one JSON object per line:
/// `{"messages":[{"role":"user","content":"…"},{"role":"assistant","content":"…"}]}`.
/// The loss counts the assistant turns only.
public enum ChatExamples {
    /// Parses one line into messages; the error names what is wrong.
    public static func messages(fromLine line: String) throws -> [ChatMessage] {
        let json: JSONValue
        do { json = try JSONValue(parsing: line) } catch { throw TrainingError("not JSON: \(error)") }
        guard let list = json["messages"]?.arrayValue, !list.isEmpty else {
            throw TrainingError("expected an object with a non-empty \"messages\" array")
        }
        var messages: [ChatMessage] = []
        for (i, m) in list.enumerated() {
            guard let role = m["role"]?.stringValue, ["system", "user", "assistant"].contains(role) else {
                throw TrainingError("message \(i): role must be system, user or assistant")
            }
            guard let content = m["content"]?.stringValue else { throw TrainingError("message \(i): content must be a string") }
            messages.append(ChatMessage(role: role, content: content))
        }
        guard messages.contains(where: { $0.role == "assistant" }) else {
            throw TrainingError("no assistant message: nothing to learn")
        }
        return messages
    }

    /// The training sequence of a conversation, formatted with the model's chat template.
    public static func sequence(_ messages: [ChatMessage], tokenizer: Tokenizer) -> TrainingSequence {
        let template = tokenizer.chatTemplate
        let (tokens, assistant) = template.trainingTokens(messages, with: tokenizer)
        return TrainingSequence(tokens: tokens, lossMask: assistant)
    }

    /// Reads a JSONL file into sequences; errors carry the line number.
    public static func load(path: String, tokenizer: Tokenizer, contextLength: Int) throws -> [TrainingSequence] {
        guard let data = FileManager.default.contents(atPath: path) else { throw TrainingError("cannot read \(path)") }
        var out: [TrainingSequence] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            do {
                let seq = sequence(try messages(fromLine: String(line)), tokenizer: tokenizer)
                guard seq.tokens.count <= contextLength else {
                    throw TrainingError("\(seq.tokens.count) tokens exceed the context length \(contextLength)")
                }
                out.append(seq)
            } catch {
                throw TrainingError("\(path):\(i + 1): \(error)")
            }
        }
        guard !out.isEmpty else { throw TrainingError("\(path) holds no examples") }
        return out
    }
}
