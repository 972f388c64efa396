package memlora.core

import java.math.BigInteger
import java.util.regex.Pattern

enum class Event { ADD, UPDATE, DELETE, NONE }

class ExtractResult(val facts: List<String>, val errors: List<String>)

/** A validated operation; [id] is the real memory id (null for ADD). */
class UpdateOp(val event: Event, val id: String?, val text: String, val oldMemory: String? = null) {
    override fun equals(other: Any?): Boolean = other is UpdateOp && other.event == event && other.id == id &&
        other.text == text && other.oldMemory == oldMemory
    override fun hashCode(): Int = listOf(event, id, text, oldMemory).hashCode()
    override fun toString(): String = "UpdateOp($event, $id, ${Json.quote(text)}, $oldMemory)"
}

class UpdateResult(val ops: List<UpdateOp>, val errors: List<String>)

/** Two-way map between the small ids shown to the model ("0", "1", ...) and real memory ids. */
class IdMap(realIds: Iterable<String> = emptyList()) {
    private val toReal = LinkedHashMap<String, String>()
    private val toShort = HashMap<String, String>()

    init { for (r in realIds) add(r) }

    fun add(realId: String): String {
        val have = toShort[realId]
        if (have != null) return have
        val short = toReal.size.toString()
        toReal[short] = realId
        toShort[realId] = short
        return short
    }

    fun short(realId: String): String = toShort[realId] ?: throw NoSuchElementException(realId)

    /** The real id for [shortId], or null if the prompt never showed it. */
    fun real(shortId: String): String? = toReal[shortId]

    fun realIds(): List<String> = ArrayList(toReal.values)
    val size: Int get() = toReal.size
}

/** Lenient parsing and strict validation of untrusted model output (`parsing.py`). */
object Parsing {
    const val MAX_INPUT_CHARS = 32768
    const val MAX_TEXT_CHARS = 2000
    private const val MAX_CANDIDATES = 32
    private val FENCE: Pattern = Pattern.compile("```[A-Za-z0-9_-]*[ \\t]*\\n?(.*?)```", Pattern.DOTALL)

    private fun balancedEnd(text: String, start: Int): Int? {
        var depth = 0
        var inStr = false
        var esc = false
        for (i in start until text.length) {
            val c = text[i]
            if (inStr) {
                if (esc) esc = false else if (c == '\\') esc = true else if (c == '"') inStr = false
            } else if (c == '"') {
                inStr = true
            } else if (c == '{' || c == '[') {
                depth++
            } else if (c == '}' || c == ']') {
                depth--
                if (depth == 0) return if (c == '}') i + 1 else null
                if (depth < 0) return null
            }
        }
        return null
    }

    /** The first JSON object in [text] (fenced blocks, then the whole text, then each balanced
     *  `{...}` span), or null and the reason. */
    fun findJsonObject(text: String): Pair<Map<String, Any?>?, String?> {
        val t = PyText.head(text, MAX_INPUT_CHARS)
        val sources = ArrayList<String>()
        val m = FENCE.matcher(t)
        while (m.find()) sources.add(m.group(1))
        sources.add(t)
        var tried = 0
        for (src in sources) {
            val whole = tryObject(src)
            if (whole != null) return Pair(whole, null)
            var pos = src.indexOf('{')
            while (pos != -1 && tried < MAX_CANDIDATES) {
                tried++
                val end = balancedEnd(src, pos)
                if (end != null) {
                    val o = tryObject(src.substring(pos, end))
                    if (o != null) return Pair(o, null)
                }
                pos = src.indexOf('{', pos + 1)
            }
        }
        return Pair(null, "no JSON object found in model output")
    }

    private fun tryObject(s: String): Map<String, Any?>? {
        val v = try { Json.parse(s) } catch (e: JsonError) { return null } catch (e: StackOverflowError) { return null }
        @Suppress("UNCHECKED_CAST")
        return v as? Map<String, Any?>
    }

    /** A usable memory text: a non-empty, not over-long string, whitespace-trimmed. */
    private fun text(v: Any?): String? {
        if (v !is String) return null
        val s = PyText.strip(v)
        val n = PyText.len(s)
        return if (n in 1..MAX_TEXT_CHARS) s else null
    }

    /** Python's `type(x).__name__` for parsed JSON values (used in error messages). */
    fun typeName(v: Any?): String = when (v) {
        null -> "NoneType"
        is String -> "str"
        is Boolean -> "bool"
        is Long, is Int, is BigInteger -> "int"
        is Double -> "float"
        is Map<*, *> -> "dict"
        is List<*> -> "list"
        else -> v.javaClass.simpleName
    }

    /** Python's `str(x)` for parsed JSON values. */
    fun pyStr(v: Any?): String = when (v) {
        null -> "None"
        is Boolean -> if (v) "True" else "False"
        is String -> v
        is Map<*, *>, is List<*> -> Json.dumps(v)
        else -> v.toString()
    }

    fun parseExtract(output: String): ExtractResult {
        val (obj, err) = findJsonObject(output)
        if (obj == null) return ExtractResult(emptyList(), listOf(err ?: "no object"))
        val raw = obj["facts"]
        if (raw !is List<*>) return ExtractResult(emptyList(), listOf("'facts' is not a list: ${typeName(raw)}"))
        val facts = ArrayList<String>()
        val errors = ArrayList<String>()
        for ((i, item) in raw.withIndex()) {
            val fact = text(item)
            if (fact == null) errors.add("facts[$i]: not a non-empty string of at most $MAX_TEXT_CHARS chars")
            else if (fact !in facts) facts.add(fact)
        }
        return ExtractResult(facts, errors)
    }

    /** `{"memory": [{"id", "text", "event", "old_memory"?}, ...]}` validated against [idMap]:
     *  ADD needs a text; UPDATE a known id and a text; DELETE/NONE a known id; one op per id. */
    fun parseUpdate(output: String, idMap: IdMap): UpdateResult {
        val (obj, err) = findJsonObject(output)
        if (obj == null) return UpdateResult(emptyList(), listOf(err ?: "no object"))
        val items = obj["memory"]
        if (items !is List<*>) return UpdateResult(emptyList(), listOf("'memory' is not a list: ${typeName(items)}"))
        val ops = ArrayList<UpdateOp>()
        val errors = ArrayList<String>()
        val touched = HashSet<String>()
        val added = HashSet<String>()
        for ((i, item) in items.withIndex()) {
            val where = "memory[$i]"
            if (item !is Map<*, *>) { errors.add("$where: not an object"); continue }
            val rawEvent = item["event"]
            val event = if (rawEvent is String) Event.values().firstOrNull { it.name == PyText.upper(PyText.strip(rawEvent)) } else null
            if (event == null) { errors.add("$where: bad event ${PyText.head(pyStr(rawEvent), 40)}"); continue }
            val t = text(item["text"])
            if (event == Event.ADD) {
                when {
                    t == null -> errors.add("$where: ADD without a usable text")
                    t in added -> errors.add("$where: duplicate ADD")
                    else -> { added.add(t); ops.add(UpdateOp(Event.ADD, null, t)) }
                }
                continue
            }
            val rawId = item["id"]
            val short = if (rawId is String || rawId is Long || rawId is BigInteger) PyText.strip(pyStr(rawId)) else null
            val real = if (short != null) idMap.real(short) else null
            if (real == null) { errors.add("$where: ${event.name} with unknown id ${PyText.head(pyStr(rawId), 40)}"); continue }
            if (real in touched) { errors.add("$where: second operation on id $short"); continue }
            if (event == Event.UPDATE && t == null) { errors.add("$where: UPDATE without a usable text"); continue }
            touched.add(real)
            val old = if (event == Event.UPDATE) text(item["old_memory"]) else null
            ops.add(UpdateOp(event, real, t ?: "", old))
        }
        return UpdateResult(ops, errors)
    }
}
