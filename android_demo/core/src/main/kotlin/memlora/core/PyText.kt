package memlora.core

/**
 * The few Python `str` behaviours the memory loop depends on, written out so Kotlin matches them:
 * lengths and slices count code points (not UTF-16 units), `strip()` uses Python's whitespace
 * set, `lower()`/`upper()` map code point by code point (locale-free), `\w` is Python's.
 */
object PyText {
    /** Python's `str.isspace()` for one code point. */
    fun isSpace(cp: Int): Boolean = when (cp) {
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
        0x2028, 0x2029, 0x202F, 0x205F, 0x3000 -> true
        else -> cp in 0x2000..0x200A
    }

    /** `s.strip()`. */
    fun strip(s: String): String {
        var start = 0
        var end = s.length
        while (start < end) {
            val cp = s.codePointAt(start)
            if (!isSpace(cp)) break
            start += Character.charCount(cp)
        }
        while (end > start) {
            val cp = s.codePointBefore(end)
            if (!isSpace(cp)) break
            end -= Character.charCount(cp)
        }
        return s.substring(start, end)
    }

    /** `s.strip(chars)` for a set of BMP characters. */
    fun stripChars(s: String, chars: String): String {
        var start = 0
        var end = s.length
        while (start < end && chars.indexOf(s[start]) >= 0) start++
        while (end > start && chars.indexOf(s[end - 1]) >= 0) end--
        return s.substring(start, end)
    }

    /** `len(s)`: code points. */
    fun len(s: String): Int = s.codePointCount(0, s.length)

    /** `s[:n]` in code points. */
    fun head(s: String, n: Int): String {
        if (s.length <= n) return s
        if (len(s) <= n) return s
        return s.substring(0, s.offsetByCodePoints(0, n))
    }

    fun lower(s: String): String {
        val sb = StringBuilder(s.length)
        var i = 0
        while (i < s.length) {
            val cp = s.codePointAt(i)
            sb.appendCodePoint(Character.toLowerCase(cp))
            i += Character.charCount(cp)
        }
        return sb.toString()
    }

    fun upper(s: String): String {
        val sb = StringBuilder(s.length)
        var i = 0
        while (i < s.length) {
            val cp = s.codePointAt(i)
            sb.appendCodePoint(Character.toUpperCase(cp))
            i += Character.charCount(cp)
        }
        return sb.toString()
    }

    /** Python's `\w` for one code point: letters, numbers (Nd, Nl, No) and underscore. */
    fun isWord(cp: Int): Boolean {
        if (cp == '_'.toString().codePointAt(0)) return true
        return when (Character.getType(cp)) {
            Character.UPPERCASE_LETTER.toInt(), Character.LOWERCASE_LETTER.toInt(),
            Character.TITLECASE_LETTER.toInt(), Character.MODIFIER_LETTER.toInt(),
            Character.OTHER_LETTER.toInt(), Character.DECIMAL_DIGIT_NUMBER.toInt(),
            Character.LETTER_NUMBER.toInt(), Character.OTHER_NUMBER.toInt() -> true
            else -> false
        }
    }

    /** `re.findall(r"\w+", text.lower())`: the word tokens both text scorers use. */
    fun tokens(text: String): List<String> {
        val s = lower(text)
        val out = ArrayList<String>()
        val cur = StringBuilder()
        var i = 0
        while (i < s.length) {
            val cp = s.codePointAt(i)
            if (isWord(cp)) cur.appendCodePoint(cp) else if (cur.length > 0) { out.add(cur.toString()); cur.setLength(0) }
            i += Character.charCount(cp)
        }
        if (cur.length > 0) out.add(cur.toString())
        return out
    }
}
