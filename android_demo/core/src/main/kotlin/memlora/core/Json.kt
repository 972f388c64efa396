package memlora.core

import java.math.BigInteger

/** A JSON syntax error: [message] says what and where (character offset). */
class JsonError(message: String) : Exception(message)

/**
 * JSON exactly as Python's `json.loads` / `json.dumps(ensure_ascii=False)` see it.
 *
 * Values: [LinkedHashMap] (object, key order kept, a repeated key keeps its first position and
 * its last value), [ArrayList], [String], [Long] or [BigInteger] (integers), [Double], [Boolean],
 * `null`. The parser is strict like Python's: only ' ', \t, \n, \r as whitespace, no control
 * characters inside strings, no trailing commas, no single quotes; `NaN`, `Infinity`, `-Infinity`
 * accepted (Python does). org.json (Android's) is lenient (`{a: 'b'}` parses), so it is not used
 * for model output: the parse results would differ from Python's.
 */
object Json {
    private const val MAX_DEPTH = 900

    /** Parse a whole document (surrounding whitespace allowed); throws [JsonError]. */
    fun parse(text: String): Any? {
        if (text.startsWith("\uFEFF")) throw JsonError("Unexpected UTF-8 BOM")
        val p = Parser(text)
        p.skipWs()
        val v = p.value(0)
        p.skipWs()
        if (p.pos != text.length) throw JsonError("Extra data at char ${p.pos}")
        return v
    }

    /** Parse, returning null instead of throwing (for "is it JSON?" checks). */
    fun parseOrNull(text: String): Any? = try { parse(text) } catch (e: JsonError) { null }

    private class Parser(val s: String) {
        var pos = 0

        fun skipWs() {
            while (pos < s.length) {
                val c = s[pos]
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') pos++ else return
            }
        }

        fun fail(what: String): Nothing = throw JsonError("$what at char $pos")

        fun value(depth: Int): Any? {
            if (pos >= s.length) fail("Expecting value")
            val c = s[pos]
            return when {
                c == '"' -> string()
                c == '{' -> obj(depth + 1)
                c == '[' -> arr(depth + 1)
                s.startsWith("null", pos) -> { pos += 4; null }
                s.startsWith("true", pos) -> { pos += 4; true }
                s.startsWith("false", pos) -> { pos += 5; false }
                s.startsWith("NaN", pos) -> { pos += 3; Double.NaN }
                s.startsWith("Infinity", pos) -> { pos += 8; Double.POSITIVE_INFINITY }
                s.startsWith("-Infinity", pos) -> { pos += 9; Double.NEGATIVE_INFINITY }
                c == '-' || (c in '0'..'9') -> number()
                else -> fail("Expecting value")
            }
        }

        fun obj(depth: Int): Map<String, Any?> {
            if (depth > MAX_DEPTH) fail("Nesting too deep")
            pos++
            val out = LinkedHashMap<String, Any?>()
            skipWs()
            if (pos < s.length && s[pos] == '}') { pos++; return out }
            while (true) {
                if (pos >= s.length || s[pos] != '"') fail("Expecting property name enclosed in double quotes")
                val key = string()
                skipWs()
                if (pos >= s.length || s[pos] != ':') fail("Expecting ':' delimiter")
                pos++
                skipWs()
                out[key] = value(depth)
                skipWs()
                if (pos >= s.length) fail("Expecting ',' delimiter")
                val c = s[pos++]
                if (c == '}') return out
                if (c != ',') { pos--; fail("Expecting ',' delimiter") }
                skipWs()
            }
        }

        fun arr(depth: Int): List<Any?> {
            if (depth > MAX_DEPTH) fail("Nesting too deep")
            pos++
            val out = ArrayList<Any?>()
            skipWs()
            if (pos < s.length && s[pos] == ']') { pos++; return out }
            while (true) {
                out.add(value(depth))
                skipWs()
                if (pos >= s.length) fail("Expecting ',' delimiter")
                val c = s[pos++]
                if (c == ']') return out
                if (c != ',') { pos--; fail("Expecting ',' delimiter") }
                skipWs()
            }
        }

        fun string(): String {
            pos++
            val sb = StringBuilder()
            while (true) {
                if (pos >= s.length) fail("Unterminated string")
                val c = s[pos++]
                when {
                    c == '"' -> return sb.toString()
                    c == '\\' -> {
                        if (pos >= s.length) fail("Unterminated string")
                        when (val e = s[pos++]) {
                            '"' -> sb.append('"')
                            '\\' -> sb.append('\\')
                            '/' -> sb.append('/')
                            'b' -> sb.append('\b')
                            'f' -> sb.append('\u000C')
                            'n' -> sb.append('\n')
                            'r' -> sb.append('\r')
                            't' -> sb.append('\t')
                            'u' -> {
                                if (pos + 4 > s.length) fail("Invalid \\uXXXX escape")
                                val hex = s.substring(pos, pos + 4)
                                if (!hex.all { it in '0'..'9' || it in 'a'..'f' || it in 'A'..'F' }) fail("Invalid \\uXXXX escape")
                                sb.append(Integer.parseInt(hex, 16).toChar())
                                pos += 4
                            }
                            else -> { pos--; fail("Invalid \\escape: '$e'") }
                        }
                    }
                    c < ' ' -> { pos--; fail("Invalid control character") }
                    else -> sb.append(c)
                }
            }
        }

        fun number(): Any {
            val start = pos
            if (s[pos] == '-') pos++
            if (pos >= s.length || s[pos] !in '0'..'9') { pos = start; fail("Expecting value") }
            if (s[pos] == '0') {
                pos++
            } else {
                while (pos < s.length && s[pos] in '0'..'9') pos++
            }
            var isInt = true
            if (pos + 1 < s.length && s[pos] == '.' && s[pos + 1] in '0'..'9') {
                isInt = false
                pos++
                while (pos < s.length && s[pos] in '0'..'9') pos++
            }
            if (pos < s.length && (s[pos] == 'e' || s[pos] == 'E')) {
                var q = pos + 1
                if (q < s.length && (s[q] == '+' || s[q] == '-')) q++
                if (q < s.length && s[q] in '0'..'9') {
                    while (q < s.length && s[q] in '0'..'9') q++
                    pos = q
                    isInt = false
                }
            }
            val lit = s.substring(start, pos)
            if (!isInt) return lit.toDouble()
            val big = BigInteger(lit)
            return if (big.bitLength() < 64) big.toLong() else big
        }
    }

    /** `json.dumps(value, ensure_ascii=False)`: separators ", " and ": ". */
    fun dumps(value: Any?): String {
        val sb = StringBuilder()
        write(sb, value)
        return sb.toString()
    }

    /** A JSON string literal as Python writes it with ensure_ascii=False. */
    fun quote(s: String): String {
        val sb = StringBuilder(s.length + 2)
        writeString(sb, s)
        return sb.toString()
    }

    private fun write(sb: StringBuilder, v: Any?) {
        when (v) {
            null -> sb.append("null")
            is String -> writeString(sb, v)
            is Boolean -> sb.append(if (v) "true" else "false")
            is Int, is Long, is BigInteger -> sb.append(v.toString())
            is Double -> sb.append(pyFloat(v))
            is Float -> sb.append(pyFloat(v.toDouble()))
            is Map<*, *> -> {
                sb.append('{')
                var first = true
                for ((k, x) in v) {
                    if (!first) sb.append(", ")
                    first = false
                    writeString(sb, k.toString())
                    sb.append(": ")
                    write(sb, x)
                }
                sb.append('}')
            }
            is Iterable<*> -> {
                sb.append('[')
                var first = true
                for (x in v) {
                    if (!first) sb.append(", ")
                    first = false
                    write(sb, x)
                }
                sb.append(']')
            }
            is Array<*> -> write(sb, v.toList())
            else -> throw IllegalArgumentException("not JSON-encodable: ${v.javaClass.name}")
        }
    }

    private fun pyFloat(d: Double): String = when {
        d.isNaN() -> "NaN"
        d == Double.POSITIVE_INFINITY -> "Infinity"
        d == Double.NEGATIVE_INFINITY -> "-Infinity"
        d == Math.rint(d) && Math.abs(d) < 1e16 -> d.toLong().toString() + ".0"
        else -> d.toString()
    }

    private fun writeString(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when (c) {
                '"' -> sb.append("\\\"")
                '\\' -> sb.append("\\\\")
                '\n' -> sb.append("\\n")
                '\r' -> sb.append("\\r")
                '\t' -> sb.append("\\t")
                '\b' -> sb.append("\\b")
                '\u000C' -> sb.append("\\f")
                else -> if (c < ' ') sb.append(String.format("\\u%04x", c.toString().codePointAt(0))) else sb.append(c)
            }
        }
        sb.append('"')
    }
}

/** Typed reads from parsed JSON, with a message naming the field when the shape is wrong. */
object J {
    fun obj(v: Any?, what: String): Map<String, Any?> {
        @Suppress("UNCHECKED_CAST")
        return v as? Map<String, Any?> ?: throw IllegalArgumentException("$what: expected an object")
    }

    fun list(v: Any?, what: String): List<Any?> = v as? List<Any?> ?: throw IllegalArgumentException("$what: expected a list")

    fun str(v: Any?, what: String): String = v as? String ?: throw IllegalArgumentException("$what: expected a string")

    fun int(v: Any?, what: String): Int = when (v) {
        is Long -> v.toInt()
        is Int -> v
        else -> throw IllegalArgumentException("$what: expected an integer")
    }

    fun ints(v: Any?, what: String): List<Int> = list(v, what).map { int(it, what) }

    fun strs(v: Any?, what: String): List<String> = list(v, what).map { str(it, what) }
}
