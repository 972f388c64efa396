import Foundation

/// One model family's turn markup; mirrors `memlora/memory/chat.py` field for field.
public struct ChatFormat {
    public let name: String
    public let bos: String
    public let turn: String
    public let generation: String
    public let stop: [String]
    public let specialTokens: [String]
    public var systemRole: Bool = true
    public var roleNames: [String: String] = [:]

    public func role(_ r: String) -> String { roleNames[r] ?? r }

    /// `turn.format(role=..., content=...)`: one pass, so braces in content stay literal.
    public func renderTurn(_ r: String, _ content: String) -> String {
        let t = Array(turn.unicodeScalars)
        let roleKey = Array("{role}".unicodeScalars)
        let contentKey = Array("{content}".unicodeScalars)
        var out = ""
        var i = 0
        while i < t.count {
            if Array(t[i..<min(t.count, i + roleKey.count)]) == roleKey {
                out += role(r); i += roleKey.count
            } else if Array(t[i..<min(t.count, i + contentKey.count)]) == contentKey {
                out += content; i += contentKey.count
            } else {
                out.unicodeScalars.append(t[i]); i += 1
            }
        }
        return out
    }
}

public struct Message: Equatable {
    public let role: String
    public let content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

public enum ChatError: Error, CustomStringConvertible {
    case unknownFormat(String)
    case badMessages(String)
    public var description: String {
        switch self {
        case .unknownFormat(let n): return "unknown chat format '\(n)'; known: \(Chat.formatNames)"
        case .badMessages(let m): return m
        }
    }
}

public enum Chat {
    public static let roles = ["system", "user", "assistant"]

    public static let formatNames = ["chatml", "llama3", "gemma"]

    public static let formats: [String: ChatFormat] = [
        "chatml": ChatFormat(name: "chatml", bos: "", turn: "<|im_start|>{role}\n{content}<|im_end|>\n",
                             generation: "<|im_start|>assistant\n", stop: ["<|im_end|>", "<|endoftext|>"],
                             specialTokens: ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]),
        "llama3": ChatFormat(name: "llama3", bos: "<|begin_of_text|>",
                             turn: "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
                             generation: "<|start_header_id|>assistant<|end_header_id|>\n\n",
                             stop: ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"],
                             specialTokens: ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                             "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"]),
        "gemma": ChatFormat(name: "gemma", bos: "<bos>", turn: "<start_of_turn>{role}\n{content}<end_of_turn>\n",
                            generation: "<start_of_turn>model\n", stop: ["<end_of_turn>", "<eos>"],
                            specialTokens: ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"],
                            systemRole: false, roleNames: ["assistant": "model"]),
    ]

    /// `<|name|>` markers of any family, plus every format's literal special tokens (longest first).
    private static let marker: NSRegularExpression = {
        var literals = Array(Set(formatNames.flatMap { formats[$0]!.specialTokens }))
        literals.sort { $0.unicodeScalars.count != $1.unicodeScalars.count ? $0.unicodeScalars.count > $1.unicodeScalars.count : $0 < $1 }
        let alts = ["<\\|[A-Za-z0-9_.:\\-]{1,64}\\|>"] + literals.map { NSRegularExpression.escapedPattern(for: $0) }
        return try! NSRegularExpression(pattern: alts.joined(separator: "|"))
    }()

    public static func format(_ name: String) throws -> ChatFormat {
        guard let f = formats[name] else { throw ChatError.unknownFormat(name) }
        return f
    }

    /// Remove every chat control marker, repeatedly (removal cannot splice a new marker).
    public static func stripSpecialTokens(_ text: String) -> String {
        var t = text
        while true {
            let ns = t as NSString
            let cleaned = marker.stringByReplacingMatches(in: t, range: NSRange(location: 0, length: ns.length), withTemplate: "")
            if cleaned == t { return cleaned }
            t = cleaned
        }
    }

    /// `render_chat(format, messages, add_generation_prompt)`.
    public static func render(_ formatName: String, _ messages: [Message], addGenerationPrompt: Bool = true) throws -> String {
        let fmt = try format(formatName)
        var msgs = messages.map { ($0.role, stripSpecialTokens($0.content)) }
        for (i, m) in msgs.enumerated() {
            if !roles.contains(m.0) { throw ChatError.badMessages("unknown role '\(m.0)'; expected one of \(roles)") }
            if m.0 == "system" && i != 0 { throw ChatError.badMessages("a system message may only come first") }
        }
        if let first = msgs.first, first.0 == "system", !fmt.systemRole {
            let system = msgs.removeFirst().1
            if let next = msgs.first, next.0 == "user" { msgs[0] = ("user", system + "\n\n" + next.1) }
            else { msgs.insert(("user", system), at: 0) }
        }
        var out = fmt.bos
        for (r, c) in msgs { out += fmt.renderTurn(r, c) }
        if addGenerationPrompt { out += fmt.generation }
        return out
    }

    public static func stopStrings(_ formatName: String) throws -> [String] { try format(formatName).stop }
}
