package memlora.core

import java.io.File
import java.util.regex.Pattern

/** A memory operation; its name is also the default adapter and template name. */
enum class Op(val value: String) {
    EXTRACT("extract"), UPDATE("update"), ANSWER("answer");

    companion object {
        fun of(v: String): Op = values().firstOrNull { it.value == v } ?: throw IllegalArgumentException("unknown op '$v'")
    }
}

class DialogTurn(val speaker: String, val text: String)

class TemplateError(message: String) : Exception(message)

/** One operation's template: an optional system part and a user part (`prompts.py`). */
class PromptTemplate(val op: Op, val system: String?, val user: String) {
    fun slots(): Set<String> {
        val out = LinkedHashSet<String>()
        for (part in listOf(system ?: "", user)) {
            val m = Prompts.SLOT.matcher(part)
            while (m.find()) out.add(m.group(1))
        }
        return out
    }

    /** Fill the slots in one pass (values verbatim) and return the chat messages. */
    fun messages(values: Map<String, String>): List<Message> {
        val out = ArrayList<Message>()
        if (system != null) out.add(Message("system", fill(system, values)))
        out.add(Message("user", fill(user, values)))
        return out
    }

    private fun fill(text: String, values: Map<String, String>): String {
        val m = Prompts.SLOT.matcher(text)
        val sb = StringBuffer()
        while (m.find()) {
            val v = values[m.group(1)] ?: throw IllegalArgumentException("no value for slot ${m.group(1)}")
            m.appendReplacement(sb, java.util.regex.Matcher.quoteReplacement(v))
        }
        m.appendTail(sb)
        return sb.toString()
    }
}

class Templates(val extract: PromptTemplate, val update: PromptTemplate, val answer: PromptTemplate) {
    operator fun get(op: Op): PromptTemplate = when (op) {
        Op.EXTRACT -> extract
        Op.UPDATE -> update
        Op.ANSWER -> answer
    }
}

/** Prompt templates and rendering, byte for byte as `memlora/memory/prompts.py`. */
object Prompts {
    /** `\{\{(\w+)\}\}` with Python's Unicode `\w`. */
    val SLOT: Pattern = Pattern.compile("\\{\\{([\\p{L}\\p{Nd}\\p{Nl}\\p{No}_]+)\\}\\}")
    /** `^=== (system|user) ===[ \t]*$`, multiline, `\n` as the only line end (as in Python). */
    private val SECTION: Pattern = Pattern.compile("^=== (system|user) ===[ \\t]*$", Pattern.MULTILINE or Pattern.UNIX_LINES)

    val SLOTS: Map<Op, Set<String>> = mapOf(
        Op.EXTRACT to setOf("conversation", "today"),
        Op.UPDATE to setOf("old_memory", "facts"),
        Op.ANSWER to setOf("memories", "question")
    )

    fun parseTemplate(op: Op, text: String): PromptTemplate {
        val m = SECTION.matcher(text)
        val roles = ArrayList<String>()
        val bodies = ArrayList<String>()
        var last = 0
        var head: String? = null
        while (m.find()) {
            if (head == null) head = text.substring(0, m.start()) else bodies.add(text.substring(last, m.start()))
            roles.add(m.group(1))
            last = m.end()
        }
        if (head == null) head = text else bodies.add(text.substring(last))
        if (PyText.strip(head).isNotEmpty()) throw TemplateError("${op.value} template: text before the first '=== role ===' header")
        val sections = LinkedHashMap<String, String>()
        for (i in roles.indices) {
            if (sections.containsKey(roles[i])) throw TemplateError("${op.value} template: duplicate ${roles[i]} section")
            sections[roles[i]] = PyText.stripChars(bodies[i], "\n")
        }
        val user = sections["user"] ?: throw TemplateError("${op.value} template: missing '=== user ===' section")
        val tpl = PromptTemplate(op, sections["system"], user)
        val found = tpl.slots()
        val expected = SLOTS.getValue(op)
        if (found != expected) throw TemplateError("${op.value} template: slots ${found.sorted()}, expected ${expected.sorted()}")
        return tpl
    }

    fun load(dir: File): Templates {
        fun one(op: Op): PromptTemplate {
            val f = File(dir, op.value + ".txt")
            if (!f.isFile) throw TemplateError("missing prompt template ${f.path}")
            return parseTemplate(op, f.readText(Charsets.UTF_8))
        }
        return Templates(one(Op.EXTRACT), one(Op.UPDATE), one(Op.ANSWER))
    }

    /** `as_data`: JSON-encode after stripping chat markers from every string (keys included). */
    fun asData(value: Any?): String = Json.dumps(clean(value))

    private fun clean(v: Any?): Any? = when (v) {
        is String -> Chat.stripSpecialTokens(v)
        is Map<*, *> -> {
            val out = LinkedHashMap<String, Any?>()
            for ((k, x) in v) out[Chat.stripSpecialTokens(k.toString())] = clean(x)
            out
        }
        is List<*> -> v.map { clean(it) }
        else -> v
    }

    private fun obj(vararg pairs: Pair<String, Any?>): Map<String, Any?> {
        val m = LinkedHashMap<String, Any?>()
        for (p in pairs) m[p.first] = p.second
        return m
    }

    fun extractMessages(t: Templates, turns: List<DialogTurn>, today: String): List<Message> {
        val conv = turns.map { obj("text" to it.text, "speaker" to it.speaker) }  // speaker last, as memlora renders it
        val todayData = asData(today)
        return t.extract.messages(mapOf("conversation" to asData(conv), "today" to todayData.substring(1, todayData.length - 1)))
    }

    /** [oldMemory] holds (short id, text) pairs. */
    fun updateMessages(t: Templates, oldMemory: List<Pair<String, String>>, facts: List<String>): List<Message> {
        val old = oldMemory.map { obj("id" to it.first, "text" to it.second) }
        return t.update.messages(mapOf("old_memory" to asData(old), "facts" to asData(facts)))
    }

    /** [memories] holds (timestamp, text) pairs. */
    fun answerMessages(t: Templates, question: String, memories: List<Pair<String, String>>): List<Message> {
        val shown = memories.map { it.first + ": " + it.second }
        return t.answer.messages(mapOf("memories" to asData(shown), "question" to asData(question)))
    }

    fun render(chatFormat: String, messages: List<Message>): String = Chat.render(chatFormat, messages, true)
}
