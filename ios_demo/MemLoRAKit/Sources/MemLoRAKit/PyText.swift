import Foundation

/// The few Python `str` behaviours the memory loop depends on, written out so Swift matches them:
/// lengths and slices count code points (Unicode scalars, not grapheme clusters), `strip()` uses
/// Python's whitespace set, `lower()`/`upper()` use the full case mappings, `\w` is Python's.
public enum PyText {
    /// Python's `str.isspace()` for one code point.
    public static func isSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
             0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return c.value >= 0x2000 && c.value <= 0x200A
        }
    }

    /// `s.strip()`.
    public static func strip(_ s: String) -> String {
        let u = Array(s.unicodeScalars)
        var start = 0
        var end = u.count
        while start < end && isSpace(u[start]) { start += 1 }
        while end > start && isSpace(u[end - 1]) { end -= 1 }
        return string(u[start..<end])
    }

    /// `s.strip(chars)`.
    public static func strip(_ s: String, chars: String) -> String {
        let set = Set(chars.unicodeScalars)
        let u = Array(s.unicodeScalars)
        var start = 0
        var end = u.count
        while start < end && set.contains(u[start]) { start += 1 }
        while end > start && set.contains(u[end - 1]) { end -= 1 }
        return string(u[start..<end])
    }

    /// Python's `a == b`: the same code points. Swift's `==` on String is canonical equivalence
    /// ("e\u{301}" == "\u{e9}"), which Python's comparison is not.
    public static func same(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    /// `len(s)`: code points.
    public static func len(_ s: String) -> Int { s.unicodeScalars.count }

    /// `s[:n]` in code points.
    public static func head(_ s: String, _ n: Int) -> String {
        let u = s.unicodeScalars
        if u.count <= n { return s }
        return string(u.prefix(n))
    }

    /// `s[n:]` in code points.
    public static func dropHead(_ s: String, _ n: Int) -> String { string(s.unicodeScalars.dropFirst(n)) }

    public static func string<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: scalars)
        return String(v)
    }

    /// `s.lower()` (full lowercase mapping, code point by code point, no locale).
    public static func lower(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars { out += c.properties.lowercaseMapping }
        return out
    }

    /// `s.upper()`.
    public static func upper(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars { out += c.properties.uppercaseMapping }
        return out
    }

    /// Python's `\w` for one code point: letters, numbers (Nd, Nl, No) and underscore.
    public static func isWord(_ c: Unicode.Scalar) -> Bool {
        if c == "_" { return true }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// `re.findall(r"\w+", text.lower())`: the word tokens both text scorers use.
    public static func tokens(_ text: String) -> [String] {
        var out: [String] = []
        var cur = String.UnicodeScalarView()
        for c in lower(text).unicodeScalars {
            if isWord(c) {
                cur.append(c)
            } else if !cur.isEmpty {
                out.append(String(cur))
                cur = String.UnicodeScalarView()
            }
        }
        if !cur.isEmpty { out.append(String(cur)) }
        return out
    }

    /// `haystack.find(needle, start)` in code points; nil when absent.
    public static func find(_ haystack: [Unicode.Scalar], _ needle: [Unicode.Scalar], from start: Int = 0) -> Int? {
        if needle.isEmpty { return start <= haystack.count ? start : nil }
        if haystack.count < needle.count { return nil }
        var i = max(0, start)
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0] {
                var ok = true
                for j in 1..<needle.count where haystack[i + j] != needle[j] { ok = false; break }
                if ok { return i }
            }
            i += 1
        }
        return nil
    }
}
