import Foundation

public enum Event: String, CaseIterable {
    case ADD, UPDATE, DELETE, NONE
}

public struct ExtractResult {
    public let facts: [String]
    public let errors: [String]
}

/// A validated operation; `id` is the real memory id (nil for ADD).
public struct UpdateOp: Equatable, CustomStringConvertible {
    public let event: Event
    public let id: String?
    public let text: String
    public let oldMemory: String?

    public init(_ event: Event, _ id: String?, _ text: String, oldMemory: String? = nil) {
        self.event = event; self.id = id; self.text = text; self.oldMemory = oldMemory
    }

    public var description: String { "UpdateOp(\(event), \(id ?? "nil"), \(JSON.quote(text)), \(oldMemory ?? "nil"))" }
}

public struct UpdateResult {
    public let ops: [UpdateOp]
    public let errors: [String]
}

/// Two-way map between the small ids shown to the model ("0", "1", ...) and real memory ids.
public final class IdMap {
    private var toReal: [String: String] = [:]
    private var toShort: [String: String] = [:]
    private var order: [String] = []

    public init<S: Sequence>(_ realIds: S) where S.Element == String { for r in realIds { _ = add(r) } }
    public convenience init() { self.init([String]()) }

    @discardableResult
    public func add(_ realId: String) -> String {
        if let have = toShort[realId] { return have }
        let short = String(order.count)
        toReal[short] = realId
        toShort[realId] = short
        order.append(realId)
        return short
    }

    public func short(_ realId: String) -> String? { toShort[realId] }

    /// The real id for `shortId`, or nil if the prompt never showed it.
    public func real(_ shortId: String) -> String? { toReal[shortId] }

    public var realIds: [String] { order }
    public var count: Int { order.count }
}

/// Lenient parsing and strict validation of untrusted model output (`parsing.py`).
public enum Parsing {
    public static let maxInputChars = 32768
    public static let maxTextChars = 2000
    static let maxCandidates = 32
    private static let fence = try! NSRegularExpression(pattern: "```[A-Za-z0-9_-]*[ \\t]*\\n?(.*?)```",
                                                        options: [.dotMatchesLineSeparators])

    /// End (exclusive) of the balanced `{...}` starting at `start`, or nil.
    private static func balancedEnd(_ t: [Unicode.Scalar], _ start: Int) -> Int? {
        var depth = 0
        var inStr = false
        var esc = false
        var i = start
        while i < t.count {
            let c = t[i]
            if inStr {
                if esc { esc = false } else if c == "\\" { esc = true } else if c == "\"" { inStr = false }
            } else if c == "\"" {
                inStr = true
            } else if c == "{" || c == "[" {
                depth += 1
            } else if c == "}" || c == "]" {
                depth -= 1
                if depth == 0 { return c == "}" ? i + 1 : nil }
                if depth < 0 { return nil }
            }
            i += 1
        }
        return nil
    }

    /// The first JSON object in `text` (fenced blocks, then the whole text, then each balanced
    /// `{...}` span), or nil and the reason.
    public static func findJSONObject(_ text: String) -> (JSONObject?, String?) {
        let t = PyText.head(text, maxInputChars)
        var sources: [String] = []
        let ns = t as NSString
        for m in fence.matches(in: t, range: NSRange(location: 0, length: ns.length)) {
            sources.append(ns.substring(with: m.range(at: 1)))
        }
        sources.append(t)
        var tried = 0
        for src in sources {
            if let whole = tryObject(src) { return (whole, nil) }
            let u = Array(src.unicodeScalars)
            var pos = u.firstIndex(of: "{")
            while let p = pos, tried < maxCandidates {
                tried += 1
                if let end = balancedEnd(u, p), let o = tryObject(PyText.string(u[p..<end])) { return (o, nil) }
                pos = u[(p + 1)...].firstIndex(of: "{")
            }
        }
        return (nil, "no JSON object found in model output")
    }

    private static func tryObject(_ s: String) -> JSONObject? { JSON.parseOrNil(s)?.object }

    /// A usable memory text: a non-empty, not over-long string, whitespace-trimmed.
    private static func text(_ v: JSON?) -> String? {
        guard let raw = v?.string else { return nil }
        let s = PyText.strip(raw)
        let n = PyText.len(s)
        return n >= 1 && n <= maxTextChars ? s : nil
    }

    /// Python's `type(x).__name__` for parsed JSON values (used in error messages).
    public static func typeName(_ v: JSON?) -> String {
        switch v {
        case nil, .null?: return "NoneType"
        case .string?: return "str"
        case .bool?: return "bool"
        case .int?, .bigInt?: return "int"
        case .double?: return "float"
        case .object?: return "dict"
        case .array?: return "list"
        }
    }

    /// Python's `str(x)` for parsed JSON values.
    public static func pyStr(_ v: JSON?) -> String {
        switch v {
        case nil, .null?: return "None"
        case .bool(let b)?: return b ? "True" : "False"
        case .string(let s)?: return s
        case .int(let i)?: return String(i)
        case .bigInt(let s)?: return s
        case .double(let d)?: return JSON.pyFloat(d).replacingOccurrences(of: "Infinity", with: "inf").replacingOccurrences(of: "NaN", with: "nan")
        case let x?: return x.dumps()
        }
    }

    public static func parseExtract(_ output: String) -> ExtractResult {
        let (obj, err) = findJSONObject(output)
        guard let o = obj else { return ExtractResult(facts: [], errors: [err ?? "no object"]) }
        guard let raw = o["facts"]?.array else {
            return ExtractResult(facts: [], errors: ["'facts' is not a list: \(typeName(o["facts"]))"])
        }
        var facts: [String] = []
        var errors: [String] = []
        for (i, item) in raw.enumerated() {
            if let fact = text(item) {
                if !facts.contains(where: { PyText.same($0, fact) }) { facts.append(fact) }
            } else {
                errors.append("facts[\(i)]: not a non-empty string of at most \(maxTextChars) chars")
            }
        }
        return ExtractResult(facts: facts, errors: errors)
    }

    /// `{"memory": [{"id", "text", "event", "old_memory"?}, ...]}` validated against `idMap`:
    /// ADD needs a text; UPDATE a known id and a text; DELETE/NONE a known id; one op per id.
    public static func parseUpdate(_ output: String, _ idMap: IdMap) -> UpdateResult {
        let (obj, err) = findJSONObject(output)
        guard let o = obj else { return UpdateResult(ops: [], errors: [err ?? "no object"]) }
        guard let items = o["memory"]?.array else {
            return UpdateResult(ops: [], errors: ["'memory' is not a list: \(typeName(o["memory"]))"])
        }
        var ops: [UpdateOp] = []
        var errors: [String] = []
        var touched = Set<String>()
        var added = Set<[Unicode.Scalar]>()  // code points, as Python's set of str
        for (i, item) in items.enumerated() {
            let at = "memory[\(i)]"
            guard let m = item.object else { errors.append("\(at): not an object"); continue }
            var event: Event? = nil
            if let raw = m["event"]?.string { event = Event(rawValue: PyText.upper(PyText.strip(raw))) }
            guard let ev = event else { errors.append("\(at): bad event \(PyText.head(pyStr(m["event"]), 40))"); continue }
            let t = text(m["text"])
            if ev == .ADD {
                if let t = t {
                    let key = Array(t.unicodeScalars)
                    if added.contains(key) { errors.append("\(at): duplicate ADD") }
                    else { added.insert(key); ops.append(UpdateOp(.ADD, nil, t)) }
                } else {
                    errors.append("\(at): ADD without a usable text")
                }
                continue
            }
            let rawId = m["id"]
            var short: String? = nil
            switch rawId {
            case .string?, .int?, .bigInt?: short = PyText.strip(pyStr(rawId))
            default: short = nil
            }
            guard let s = short, let real = idMap.real(s) else {
                errors.append("\(at): \(ev.rawValue) with unknown id \(PyText.head(pyStr(rawId), 40))"); continue
            }
            if touched.contains(real) { errors.append("\(at): second operation on id \(s)"); continue }
            if ev == .UPDATE && t == nil { errors.append("\(at): UPDATE without a usable text"); continue }
            touched.insert(real)
            let old = ev == .UPDATE ? text(m["old_memory"]) : nil
            ops.append(UpdateOp(ev, real, t ?? "", oldMemory: old))
        }
        return UpdateResult(ops: ops, errors: errors)
    }
}
