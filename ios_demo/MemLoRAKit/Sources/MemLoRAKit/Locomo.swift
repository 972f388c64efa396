import Foundation

public struct LocomoTurn {
    public let speaker: String
    public let diaId: String
    public let text: String
    public let blipCaption: String?

    /// The text with the image caption appended, as LoCoMo baselines do (`Turn.display_text`).
    public var displayText: String {
        if let c = blipCaption, !c.isEmpty { return "\(text) [shares \(c)]" }
        return text
    }
}

public struct LocomoSession {
    public let index: Int
    public let dateTime: String
    public let turns: [LocomoTurn]
    /// `locomo_eval._date`.
    public var date: String { dateTime.isEmpty ? "session \(index)" : dateTime }
}

public struct LocomoQA {
    public let question: String
    public let answer: String
    public let category: Int
}

public struct LocomoConversation {
    public let sampleId: String
    public let speakerA: String
    public let speakerB: String
    public let sessions: [LocomoSession]
    public let qa: [LocomoQA]
}

/// Reads LoCoMo (`memlora/memory/locomo.py`) from a `.json` file (a list of conversations or one).
/// Foundation has no zip reader: unzip `locomo10.zip` first (the Kotlin core reads the zip).
public enum Locomo {
    public static func parseConversation(_ raw: JSONObject, fallbackId: String) throws -> LocomoConversation {
        let conv = raw["conversation"]?.object ?? raw
        let sid = raw["sample_id"].map { Parsing.pyStr($0) } ?? fallbackId
        var sessions: [LocomoSession] = []
        for (key, value) in conv.pairs {
            guard key.hasPrefix("session_"), let idx = Int(key.dropFirst("session_".count)),
                  key == "session_\(idx)", let list = value.array else { continue }
            let turns = try list.map { t -> LocomoTurn in
                let o = try J.obj(t, "turn")
                return LocomoTurn(speaker: Parsing.pyStr(o["speaker"]), diaId: Parsing.pyStr(o["dia_id"]),
                                  text: Parsing.pyStr(o["text"]), blipCaption: o["blip_caption"]?.string)
            }
            sessions.append(LocomoSession(index: idx, dateTime: conv["session_\(idx)_date_time"].map { Parsing.pyStr($0) } ?? "", turns: turns))
        }
        sessions.sort { $0.index < $1.index }
        let qa = try J.list(raw["qa"] ?? .array([]), "qa").map { q -> LocomoQA in
            let o = try J.obj(q, "qa[]")
            let ans = o["answer"] ?? o["adversarial_answer"]
            return LocomoQA(question: Parsing.pyStr(o["question"]), answer: ans.map { $0.isNull ? "" : Parsing.pyStr($0) } ?? "",
                            category: try J.int(o["category"], "category"))
        }
        return LocomoConversation(sampleId: sid, speakerA: Parsing.pyStr(conv["speaker_a"]), speakerB: Parsing.pyStr(conv["speaker_b"]),
                                  sessions: sessions, qa: qa)
    }

    public static func load(_ url: URL) throws -> [LocomoConversation] {
        guard url.pathExtension == "json" else { throw BundleError("\(url.path): expected a .json LoCoMo file (unzip locomo10.zip first)") }
        let name = url.deletingPathExtension().lastPathComponent
        let data = try JSON.parse(try String(contentsOf: url, encoding: .utf8))
        switch data {
        case .array(let a): return try a.enumerated().map { try parseConversation(try J.obj($0.element, "conversation"), fallbackId: "\(name)-\($0.offset)") }
        case .object(let o): return [try parseConversation(o, fallbackId: name)]
        default: throw BundleError("\(name): expected a JSON object or list")
        }
    }
}
