import Foundation

/// A memory operation; its name is also the default adapter and template name.
public enum Op: String, CaseIterable {
    case extract, update, answer

    public static func of(_ v: String) throws -> Op {
        guard let op = Op(rawValue: v) else { throw TemplateError(message: "unknown op '\(v)'") }
        return op
    }
}

public struct DialogTurn: Equatable {
    public let speaker: String
    public let text: String
    public init(speaker: String, text: String) { self.speaker = speaker; self.text = text }
}

public struct TemplateError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// One operation's template: an optional system part and a user part (`prompts.py`).
public struct PromptTemplate {
    public let op: Op
    public let system: String?
    public let user: String

    /// Slot names in order of first appearance.
    public func slots() -> [String] {
        var out: [String] = []
        for part in [system ?? "", user] {
            for m in Prompts.slotMatches(part) where !out.contains(m.name) { out.append(m.name) }
        }
        return out
    }

    /// Fill the slots in one pass (values verbatim) and return the chat messages.
    public func messages(_ values: [String: String]) throws -> [Message] {
        var out: [Message] = []
        if let s = system { out.append(Message(role: "system", content: try fill(s, values))) }
        out.append(Message(role: "user", content: try fill(user, values)))
        return out
    }

    private func fill(_ text: String, _ values: [String: String]) throws -> String {
        let u = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var last = 0
        for m in Prompts.slotMatches(text) {
            guard let v = values[m.name] else { throw TemplateError(message: "no value for slot \(m.name)") }
            out.append(contentsOf: u[last..<m.start])
            out.append(contentsOf: v.unicodeScalars)
            last = m.end
        }
        out.append(contentsOf: u[last...])
        return String(out)
    }
}

public struct Templates {
    public let extract: PromptTemplate
    public let update: PromptTemplate
    public let answer: PromptTemplate

    public subscript(op: Op) -> PromptTemplate {
        switch op {
        case .extract: return extract
        case .update: return update
        case .answer: return answer
        }
    }
}

/// Prompt templates and rendering, byte for byte as `memlora/memory/prompts.py`.
public enum Prompts {
    public static let slotsByOp: [Op: Set<String>] = [
        .extract: ["conversation", "today"],
        .update: ["old_memory", "facts"],
        .answer: ["memories", "question"],
    ]

    struct SlotMatch { let name: String; let start: Int; let end: Int }

    /// `re.finditer(r"\{\{(\w+)\}\}", text)` with Python's Unicode `\w` (offsets in code points).
    static func slotMatches(_ text: String) -> [SlotMatch] {
        let u = Array(text.unicodeScalars)
        var out: [SlotMatch] = []
        var i = 0
        while i + 1 < u.count {
            if u[i] == "{" && u[i + 1] == "{" {
                var j = i + 2
                while j < u.count && PyText.isWord(u[j]) { j += 1 }
                if j > i + 2 && j + 1 < u.count && u[j] == "}" && u[j + 1] == "}" {
                    out.append(SlotMatch(name: PyText.string(u[(i + 2)..<j]), start: i, end: j + 2))
                    i = j + 2
                    continue
                }
            }
            i += 1
        }
        return out
    }

    /// Split at `^=== (system|user) ===[ \t]*$` lines (multiline, `\n` the only line end, as in Python).
    static func sections(_ text: String) -> (head: String, parts: [(role: String, body: String)]) {
        let u = Array(text.unicodeScalars)
        var headers: [(role: String, start: Int, end: Int)] = []
        var lineStart = 0
        while lineStart <= u.count {
            var lineEnd = lineStart
            while lineEnd < u.count && u[lineEnd] != "\n" { lineEnd += 1 }
            let line = PyText.string(u[lineStart..<lineEnd])
            for role in ["system", "user"] {
                let h = "=== \(role) ==="
                if line.hasPrefix(h) {
                    let rest = line.unicodeScalars.dropFirst(h.unicodeScalars.count)
                    if rest.allSatisfy({ $0 == " " || $0 == "\t" }) { headers.append((role, lineStart, lineEnd)) }
                }
            }
            if lineEnd >= u.count { break }
            lineStart = lineEnd + 1
        }
        if headers.isEmpty { return (text, []) }
        let head = PyText.string(u[0..<headers[0].start])
        var parts: [(role: String, body: String)] = []
        for (i, h) in headers.enumerated() {
            let bodyEnd = i + 1 < headers.count ? headers[i + 1].start : u.count
            parts.append((h.role, PyText.string(u[h.end..<bodyEnd])))
        }
        return (head, parts)
    }

    public static func parseTemplate(_ op: Op, _ text: String) throws -> PromptTemplate {
        let (head, parts) = sections(text)
        if !PyText.strip(head).isEmpty { throw TemplateError(message: "\(op.rawValue) template: text before the first '=== role ===' header") }
        var found: [String: String] = [:]
        for (role, body) in parts {
            if found[role] != nil { throw TemplateError(message: "\(op.rawValue) template: duplicate \(role) section") }
            found[role] = PyText.strip(body, chars: "\n")
        }
        guard let user = found["user"] else { throw TemplateError(message: "\(op.rawValue) template: missing '=== user ===' section") }
        let tpl = PromptTemplate(op: op, system: found["system"], user: user)
        let slots = Set(tpl.slots())
        let expected = slotsByOp[op]!
        if slots != expected {
            throw TemplateError(message: "\(op.rawValue) template: slots \(slots.sorted()), expected \(expected.sorted())")
        }
        return tpl
    }

    public static func load(_ dir: URL) throws -> Templates {
        func one(_ op: Op) throws -> PromptTemplate {
            let f = dir.appendingPathComponent(op.rawValue + ".txt")
            guard FileManager.default.fileExists(atPath: f.path) else { throw TemplateError(message: "missing prompt template \(f.path)") }
            return try parseTemplate(op, try String(contentsOf: f, encoding: .utf8))
        }
        return Templates(extract: try one(.extract), update: try one(.update), answer: try one(.answer))
    }

    /// `as_data`: JSON-encode after stripping chat markers from every string (keys included).
    public static func asData(_ value: JSON) -> String { clean(value).dumps() }

    private static func clean(_ v: JSON) -> JSON {
        switch v {
        case .string(let s): return .string(Chat.stripSpecialTokens(s))
        case .array(let a): return .array(a.map(clean))
        case .object(let o):
            var out = JSONObject()
            for (k, x) in o.pairs { out[Chat.stripSpecialTokens(k)] = clean(x) }
            return .object(out)
        default: return v
        }
    }

    public static func extractMessages(_ t: Templates, _ turns: [DialogTurn], today: String) throws -> [Message] {
        let conv = JSON.array(turns.map { ["text": .string($0.text), "speaker": .string($0.speaker)] })  // speaker last, as memlora renders it
        let todayData = Array(asData(.string(today)).unicodeScalars)
        return try t.extract.messages(["conversation": asData(conv),
                                       "today": PyText.string(todayData[1..<(todayData.count - 1)])])
    }

    /// `oldMemory` holds (short id, text) pairs.
    public static func updateMessages(_ t: Templates, _ oldMemory: [(String, String)], _ facts: [String]) throws -> [Message] {
        let old = JSON.array(oldMemory.map { ["id": .string($0.0), "text": .string($0.1)] })
        return try t.update.messages(["old_memory": asData(old), "facts": asData(JSON(facts))])
    }

    /// `memories` holds (timestamp, text) pairs.
    public static func answerMessages(_ t: Templates, _ question: String, _ memories: [(String, String)]) throws -> [Message] {
        let shown = memories.map { $0.0 + ": " + $0.1 }
        return try t.answer.messages(["memories": asData(JSON(shown)), "question": asData(.string(question))])
    }

    public static func render(_ chatFormat: String, _ messages: [Message]) throws -> String {
        try Chat.render(chatFormat, messages, addGenerationPrompt: true)
    }
}
