import Foundation
import Hub
import MemLoRAKit
import Tokenizers

/// The bundle's `tokenizer.json` through swift-transformers' `Tokenizers` (pinned in project.yml).
/// The bundle ships no `tokenizer_config.json`, so the config is built here: the tokenizer class
/// from the model type in tokenizer.json, and no clean-up of spaces on decode (the Python side
/// decodes with `tokenizers.Tokenizer.decode`, which never cleans up). Prompts are encoded without
/// special tokens, as Python does (the chat format already wrote any BOS).
final class HFTokenizer: TokenizerAccess {
    private let tokenizer: any Tokenizer
    private let specialIds: Set<Int>
    /// Exact token -> id (added tokens and the model vocabulary), as `tokenizers.Tokenizer.token_to_id`;
    /// swift-transformers' `convertTokenToId` answers the unknown token's id for an unknown name.
    private let tokenIds: [String: Int]

    init(tokenizerJSON url: URL) throws {
        let data = try Data(contentsOf: url)
        guard let dict = try JSONSerialization.jsonObject(with: data) as? [NSString: Any] else {
            throw BundleError("\(url.path): tokenizer.json is not a JSON object; re-run memlora export")
        }
        let modelType = ((dict["model"] as? [String: Any])?["type"] as? String) ?? "BPE"
        let tokenizerClass: String
        switch modelType {
        case "Unigram": tokenizerClass = "XLMRobertaTokenizerFast"
        case "WordPiece": tokenizerClass = "BertTokenizerFast"
        default: tokenizerClass = "PreTrainedTokenizerFast"  // BPE (Qwen, Llama 3, Gemma): BPETokenizer
        }
        let config = Config(["tokenizer_class": tokenizerClass, "clean_up_tokenization_spaces": false] as [NSString: Any])
        do {
            tokenizer = try AutoTokenizer.from(tokenizerConfig: config, tokenizerData: Config(dict))
        } catch {
            throw BundleError("\(url.path): swift-transformers cannot read this tokenizer (\(error)); report the model family")
        }
        var special = Set<Int>()
        var ids: [String: Int] = [:]
        if let vocab = (dict["model"] as? [String: Any])?["vocab"] as? [String: Any] {
            for (k, v) in vocab { if let id = v as? Int { ids[k] = id } }
        }
        for t in (dict["added_tokens"] as? [[String: Any]]) ?? [] {
            guard let id = t["id"] as? Int, let content = t["content"] as? String else { continue }
            ids[content] = id
            if (t["special"] as? Bool) == true { special.insert(id) }
        }
        specialIds = special
        tokenIds = ids
    }

    func encode(_ text: String) -> [Int] { tokenizer.encode(text: text, addSpecialTokens: false) }

    func decode(_ ids: [Int]) -> String { tokenizer.decode(tokens: ids, skipSpecialTokens: false) }

    func isSpecial(_ id: Int) -> Bool { specialIds.contains(id) }

    /// `eos_ids_for`: ids of single-token stop strings and of the usual eos names in this vocabulary.
    func eosIds(stop: [String]) -> [Int] {
        var ids: [Int] = []
        for name in stop + DecodeRules.eosNames {
            if let id = tokenIds[name], !ids.contains(id) { ids.append(id) }
        }
        return ids
    }
}
