package memlora.core

import java.util.regex.Pattern

/** One model family's turn markup; mirrors `memlora/memory/chat.py` field for field. */
class ChatFormat(
    val name: String,
    val bos: String,
    val turn: String,
    val generation: String,
    val stop: List<String>,
    val specialTokens: List<String>,
    val systemRole: Boolean = true,
    val roleNames: Map<String, String> = emptyMap()
) {
    fun role(r: String): String = roleNames[r] ?: r

    /** `turn.format(role=..., content=...)`: one pass, so braces in content stay literal. */
    fun renderTurn(r: String, content: String): String {
        val sb = StringBuilder()
        var i = 0
        while (i < turn.length) {
            when {
                turn.startsWith("{role}", i) -> { sb.append(role(r)); i += 6 }
                turn.startsWith("{content}", i) -> { sb.append(content); i += 9 }
                else -> { sb.append(turn[i]); i++ }
            }
        }
        return sb.toString()
    }
}

class Message(val role: String, val content: String)

object Chat {
    val ROLES = listOf("system", "user", "assistant")

    val FORMATS: Map<String, ChatFormat> = linkedMapOf(
        "chatml" to ChatFormat("chatml", "", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n",
            listOf("<|im_end|>", "<|endoftext|>"), listOf("<|im_start|>", "<|im_end|>", "<|endoftext|>")),
        "llama3" to ChatFormat("llama3", "<|begin_of_text|>",
            "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            listOf("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
            listOf("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>")),
        "gemma" to ChatFormat("gemma", "<bos>", "<start_of_turn>{role}\n{content}<end_of_turn>\n", "<start_of_turn>model\n",
            listOf("<end_of_turn>", "<eos>"), listOf("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
            false, mapOf("assistant" to "model"))
    )

    private val MARKER: Pattern = run {
        val literals = FORMATS.values.flatMap { it.specialTokens }.toSet().sortedByDescending { it.length }
        val alts = ArrayList<String>()
        alts.add("<\\|[A-Za-z0-9_.:\\-]{1,64}\\|>")
        for (t in literals) alts.add(Pattern.quote(t))
        Pattern.compile(alts.joinToString("|"))
    }

    fun format(name: String): ChatFormat =
        FORMATS[name] ?: throw IllegalArgumentException("unknown chat format '$name'; known: ${FORMATS.keys.sorted()}")

    /** Remove every chat control marker, repeatedly (removal cannot splice a new marker). */
    fun stripSpecialTokens(text: String): String {
        var t = text
        while (true) {
            val cleaned = MARKER.matcher(t).replaceAll("")
            if (cleaned == t) return cleaned
            t = cleaned
        }
    }

    /** `render_chat(format, messages, add_generation_prompt)`. */
    fun render(formatName: String, messages: List<Message>, addGenerationPrompt: Boolean = true): String {
        val fmt = format(formatName)
        val msgs = ArrayList<Pair<String, String>>()
        for (m in messages) msgs.add(Pair(m.role, stripSpecialTokens(m.content)))
        for ((i, m) in msgs.withIndex()) {
            if (m.first !in ROLES) throw IllegalArgumentException("unknown role '${m.first}'; expected one of $ROLES")
            if (m.first == "system" && i != 0) throw IllegalArgumentException("a system message may only come first")
        }
        if (msgs.isNotEmpty() && msgs[0].first == "system" && !fmt.systemRole) {
            val system = msgs.removeAt(0).second
            if (msgs.isNotEmpty() && msgs[0].first == "user") msgs[0] = Pair("user", system + "\n\n" + msgs[0].second)
            else msgs.add(0, Pair("user", system))
        }
        val sb = StringBuilder(fmt.bos)
        for ((r, c) in msgs) sb.append(fmt.renderTurn(r, c))
        if (addGenerationPrompt) sb.append(fmt.generation)
        return sb.toString()
    }

    fun stopStrings(formatName: String): List<String> = format(formatName).stop
}
