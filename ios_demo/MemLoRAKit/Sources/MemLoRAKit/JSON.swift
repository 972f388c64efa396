import Foundation

/// A JSON syntax error: the message says what and where (code point offset).
public struct JSONError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A JSON object that keeps key order as Python's dict does: a repeated key keeps its first
/// position and takes its last value.
public struct JSONObject: Equatable {
    public private(set) var keys: [String] = []
    private var values: [String: JSON] = [:]

    public init() {}

    public init(_ pairs: [(String, JSON)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public subscript(key: String) -> JSON? {
        get { values[key] }
        set {
            if let v = newValue {
                if values[key] == nil { keys.append(key) }
                values[key] = v
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var pairs: [(String, JSON)] { keys.map { ($0, values[$0]!) } }
    public var count: Int { keys.count }
}

/// A parsed JSON value, exactly as Python's `json.loads` sees it.
///
/// `json.loads` is stricter than some parsers (no single quotes, no trailing commas, no control
/// characters in strings, only ' ', \t, \n, \r as whitespace) and looser than others (`NaN`,
/// `Infinity`, `-Infinity`; integers of any size). Foundation's `JSONSerialization` differs on
/// both sides and loses key order, so the core parses model output with this instead.
public indirect enum JSON: Equatable {
    case null
    case bool(Bool)
    /// An integer that fits in 64 bits.
    case int(Int64)
    /// A larger integer, as its canonical decimal digits (Python ints are unbounded).
    case bigInt(String)
    case double(Double)
    case string(String)
    case array([JSON])
    case object(JSONObject)

    static let maxDepth = 900

    // MARK: typed reads

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var int: Int? { if case .int(let i) = self { return Int(exactly: i) }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSON]? { if case .array(let a) = self { return a }; return nil }
    public var object: JSONObject? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }
    public var number: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .bigInt(let s): return Double(s)
        default: return nil
        }
    }
    public subscript(key: String) -> JSON? { object?[key] }

    // MARK: parse

    /// Parse a whole document (surrounding whitespace allowed), as `json.loads`.
    public static func parse(_ text: String) throws -> JSON {
        let s = Array(text.unicodeScalars)
        if s.first == "\u{FEFF}" { throw JSONError(message: "Unexpected UTF-8 BOM") }
        var p = Parser(s: s)
        p.skipWs()
        let v = try p.value(depth: 0)
        p.skipWs()
        if p.pos != s.count { throw JSONError(message: "Extra data at char \(p.pos)") }
        return v
    }

    /// Parse, returning nil instead of throwing.
    public static func parseOrNil(_ text: String) -> JSON? { try? parse(text) }

    private struct Parser {
        let s: [Unicode.Scalar]
        var pos = 0

        init(s: [Unicode.Scalar]) { self.s = s }

        mutating func skipWs() {
            while pos < s.count {
                let c = s[pos]
                if c == " " || c == "\t" || c == "\n" || c == "\r" { pos += 1 } else { return }
            }
        }

        func fail(_ what: String) -> JSONError { JSONError(message: "\(what) at char \(pos)") }

        func starts(_ lit: String) -> Bool {
            var i = pos
            for c in lit.unicodeScalars {
                if i >= s.count || s[i] != c { return false }
                i += 1
            }
            return true
        }

        mutating func value(depth: Int) throws -> JSON {
            guard pos < s.count else { throw fail("Expecting value") }
            let c = s[pos]
            if c == "\"" { return .string(try string()) }
            if c == "{" { return try obj(depth: depth + 1) }
            if c == "[" { return try arr(depth: depth + 1) }
            if starts("null") { pos += 4; return .null }
            if starts("true") { pos += 4; return .bool(true) }
            if starts("false") { pos += 5; return .bool(false) }
            if starts("NaN") { pos += 3; return .double(.nan) }
            if starts("Infinity") { pos += 8; return .double(.infinity) }
            if starts("-Infinity") { pos += 9; return .double(-.infinity) }
            if c == "-" || Parser.isDigit(c) { return try number() }
            throw fail("Expecting value")
        }

        static func isDigit(_ c: Unicode.Scalar) -> Bool { c.value >= 48 && c.value <= 57 }

        mutating func obj(depth: Int) throws -> JSON {
            if depth > JSON.maxDepth { throw fail("Nesting too deep") }
            pos += 1
            var out = JSONObject()
            skipWs()
            if pos < s.count && s[pos] == "}" { pos += 1; return .object(out) }
            while true {
                guard pos < s.count, s[pos] == "\"" else { throw fail("Expecting property name enclosed in double quotes") }
                let key = try string()
                skipWs()
                guard pos < s.count, s[pos] == ":" else { throw fail("Expecting ':' delimiter") }
                pos += 1
                skipWs()
                out[key] = try value(depth: depth)
                skipWs()
                guard pos < s.count else { throw fail("Expecting ',' delimiter") }
                let c = s[pos]
                pos += 1
                if c == "}" { return .object(out) }
                if c != "," { pos -= 1; throw fail("Expecting ',' delimiter") }
                skipWs()
            }
        }

        mutating func arr(depth: Int) throws -> JSON {
            if depth > JSON.maxDepth { throw fail("Nesting too deep") }
            pos += 1
            var out: [JSON] = []
            skipWs()
            if pos < s.count && s[pos] == "]" { pos += 1; return .array(out) }
            while true {
                out.append(try value(depth: depth))
                skipWs()
                guard pos < s.count else { throw fail("Expecting ',' delimiter") }
                let c = s[pos]
                pos += 1
                if c == "]" { return .array(out) }
                if c != "," { pos -= 1; throw fail("Expecting ',' delimiter") }
                skipWs()
            }
        }

        mutating func hex4() throws -> UInt32 {
            guard pos + 4 <= s.count else { throw fail("Invalid \\uXXXX escape") }
            var v: UInt32 = 0
            for i in 0..<4 {
                guard let d = Int(String(s[pos + i]), radix: 16) else { throw fail("Invalid \\uXXXX escape") }
                v = v * 16 + UInt32(d)
            }
            pos += 4
            return v
        }

        mutating func string() throws -> String {
            pos += 1
            var out = String.UnicodeScalarView()
            while true {
                guard pos < s.count else { throw fail("Unterminated string") }
                let c = s[pos]
                pos += 1
                if c == "\"" { return String(out) }
                if c == "\\" {
                    guard pos < s.count else { throw fail("Unterminated string") }
                    let e = s[pos]
                    pos += 1
                    switch e {
                    case "\"": out.append("\"")
                    case "\\": out.append("\\")
                    case "/": out.append("/")
                    case "b": out.append("\u{08}")
                    case "f": out.append("\u{0C}")
                    case "n": out.append("\n")
                    case "r": out.append("\r")
                    case "t": out.append("\t")
                    case "u":
                        let u = try hex4()
                        if u >= 0xD800 && u <= 0xDBFF, pos + 6 <= s.count, s[pos] == "\\", s[pos + 1] == "u" {
                            let save = pos
                            pos += 2
                            let lo = try hex4()
                            if lo >= 0xDC00 && lo <= 0xDFFF {
                                out.append(Unicode.Scalar(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))!)
                                continue
                            }
                            pos = save
                        }
                        // A lone surrogate (Python keeps it; a Swift String cannot hold one).
                        out.append(Unicode.Scalar(u) ?? "\u{FFFD}")
                    default:
                        pos -= 1
                        throw fail("Invalid \\escape: '\(e)'")
                    }
                } else if c.value < 0x20 {
                    pos -= 1
                    throw fail("Invalid control character")
                } else {
                    out.append(c)
                }
            }
        }

        mutating func number() throws -> JSON {
            let start = pos
            if s[pos] == "-" { pos += 1 }
            guard pos < s.count, Parser.isDigit(s[pos]) else { pos = start; throw fail("Expecting value") }
            if s[pos] == "0" {
                pos += 1
            } else {
                while pos < s.count && Parser.isDigit(s[pos]) { pos += 1 }
            }
            var isInt = true
            if pos + 1 < s.count && s[pos] == "." && Parser.isDigit(s[pos + 1]) {
                isInt = false
                pos += 1
                while pos < s.count && Parser.isDigit(s[pos]) { pos += 1 }
            }
            if pos < s.count && (s[pos] == "e" || s[pos] == "E") {
                var q = pos + 1
                if q < s.count && (s[q] == "+" || s[q] == "-") { q += 1 }
                if q < s.count && Parser.isDigit(s[q]) {
                    while q < s.count && Parser.isDigit(s[q]) { q += 1 }
                    pos = q
                    isInt = false
                }
            }
            var lit = String.UnicodeScalarView()
            lit.append(contentsOf: s[start..<pos])
            let text = String(lit)
            if !isInt { return .double(Double(text) ?? .nan) }
            if let i = Int64(text) { return .int(i) }
            return .bigInt(text)
        }
    }

    // MARK: dumps

    /// `json.dumps(value, ensure_ascii=False)`: separators ", " and ": ".
    public func dumps() -> String {
        var out = ""
        write(&out)
        return out
    }

    private func write(_ out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .bigInt(let s): out += s
        case .double(let d): out += JSON.pyFloat(d)
        case .string(let s): JSON.writeString(&out, s)
        case .array(let a):
            out += "["
            for (i, x) in a.enumerated() {
                if i > 0 { out += ", " }
                x.write(&out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, (k, v)) in o.pairs.enumerated() {
                if i > 0 { out += ", " }
                JSON.writeString(&out, k)
                out += ": "
                v.write(&out)
            }
            out += "}"
        }
    }

    /// Python's `repr(float)` for the values the core writes (shortest round-trip digits).
    static func pyFloat(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d == .infinity { return "Infinity" }
        if d == -.infinity { return "-Infinity" }
        if d == d.rounded() && abs(d) < 1e16 { return String(Int64(d)) + ".0" }
        var t = "\(d)"  // Swift prints 1e-05 as "1e-05" and 1e+16 as "1e+16", as Python does
        if t.hasSuffix(".0") && t.contains("e") { t = t.replacingOccurrences(of: ".0e", with: "e") }
        return t
    }

    /// A JSON string literal as Python writes it with ensure_ascii=False.
    public static func quote(_ s: String) -> String {
        var out = ""
        writeString(&out, s)
        return out
    }

    static func writeString(_ out: inout String, _ s: String) {
        out += "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 {
                    let h = String(c.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        out += "\""
    }
}

// MARK: literals and conversions (so tests and reports build JSON values directly)

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(Int64(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(JSONObject(elements)) }
    public init(nilLiteral: ()) { self = .null }
}

public extension JSON {
    init(_ s: String?) { self = s.map { .string($0) } ?? .null }
    init(_ i: Int) { self = .int(Int64(i)) }
    init(_ d: Double) { self = .double(d) }
    init(_ strings: [String]) { self = .array(strings.map { .string($0) }) }
    init(_ ints: [Int]) { self = .array(ints.map { .int(Int64($0)) }) }
}

/// Typed reads from parsed JSON, with a message naming the field when the shape is wrong.
public enum J {
    public struct ShapeError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func obj(_ v: JSON?, _ what: String) throws -> JSONObject {
        guard let o = v?.object else { throw ShapeError(description: "\(what): expected an object") }
        return o
    }

    public static func list(_ v: JSON?, _ what: String) throws -> [JSON] {
        guard let a = v?.array else { throw ShapeError(description: "\(what): expected a list") }
        return a
    }

    public static func str(_ v: JSON?, _ what: String) throws -> String {
        guard let s = v?.string else { throw ShapeError(description: "\(what): expected a string") }
        return s
    }

    public static func int(_ v: JSON?, _ what: String) throws -> Int {
        guard let i = v?.int else { throw ShapeError(description: "\(what): expected an integer") }
        return i
    }

    public static func ints(_ v: JSON?, _ what: String) throws -> [Int] { try list(v, what).map { try int($0, what) } }

    public static func strs(_ v: JSON?, _ what: String) throws -> [String] { try list(v, what).map { try str($0, what) } }
}
