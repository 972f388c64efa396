package memlora.core

import java.io.BufferedReader
import java.io.BufferedWriter
import java.io.File
import java.io.InputStreamReader
import java.io.OutputStreamWriter

/** The host [Engine]: `python -m memlora.serve BUNDLE --backend B` spoken to in JSON lines. */
class HostEngine(python: String, bundle: String, backend: String = "onnx") : Engine, TokenizerAccess {
    private val proc: Process = ProcessBuilder(python, "-m", "memlora.serve", bundle, "--backend", backend)
        .redirectError(ProcessBuilder.Redirect.INHERIT).start()
    private val out = BufferedWriter(OutputStreamWriter(proc.outputStream, Charsets.UTF_8))
    private val inp = BufferedReader(InputStreamReader(proc.inputStream, Charsets.UTF_8))
    private var nextId = 0L
    val info: Map<String, Any?>
    override val adapters: List<String>

    init {
        val ready = J.obj(Json.parse(inp.readLine() ?: throw IllegalStateException("memlora.serve exited before ready")), "ready")
        if (ready["ready"] != true) throw IllegalStateException("memlora.serve: ${ready["error"]}")
        info = ready
        adapters = J.strs(ready["adapters"], "adapters")
    }

    private fun call(req: Map<String, Any?>): Map<String, Any?> {
        val id = ++nextId
        val r = LinkedHashMap<String, Any?>(req)
        r["id"] = id
        out.write(Json.dumps(r))
        out.write("\n")
        out.flush()
        val line = inp.readLine() ?: throw IllegalStateException("memlora.serve exited")
        val resp = J.obj(Json.parse(line), "response")
        if (resp.containsKey("error")) throw IllegalStateException("memlora.serve: ${resp["error"]}")
        return resp
    }

    override fun generate(adapter: String?, prompt: String, settings: GenerationSettings, onToken: ((String) -> Unit)?): GenerationResult {
        val r = call(linkedMapOf("op" to "generate", "adapter" to adapter, "prompt" to prompt, "settings" to settings.toJson()))
        if (onToken != null) for (p in J.strs(r["pieces"], "pieces")) onToken(p)
        return GenerationResult(J.str(r["text"], "text"), J.ints(r["ids"], "ids"), J.int(r["prompt_tokens"], "prompt_tokens"),
            J.str(r["stopped_by"], "stopped_by"), (r["prefill_ms"] as Number).toDouble(), (r["decode_ms"] as Number).toDouble())
    }

    override fun encode(text: String): List<Int> = J.ints(call(linkedMapOf("op" to "encode", "text" to text))["ids"], "ids")

    override fun decode(ids: List<Int>): String = J.str(call(linkedMapOf("op" to "decode", "ids" to ids))["text"], "text")

    override fun close() {
        try { call(linkedMapOf("op" to "quit")) } catch (e: Exception) { }
        proc.waitFor()
    }
}

object Props {
    fun need(name: String): String = System.getProperty(name)
        ?: throw AssertionError("system property $name not set (run android_demo/core/host_test.sh)")

    fun file(name: String): File {
        val f = File(need(name))
        if (!f.exists()) throw AssertionError("$name: ${f.path} does not exist")
        return f
    }
}

/** The store as the fixtures write it: memories m1, m2, ... in creation order (first history event). */
class StoreDump(store: MemoryStore) {
    val refs = LinkedHashMap<String, String>()

    fun ref(id: String): String {
        val have = refs[id]
        if (have != null) return have
        val r = "m" + (refs.size + 1)
        refs[id] = r
        return r
    }

    val history: List<Map<String, Any?>> = store.history().map {
        linkedMapOf("memory" to ref(it.memoryId), "event" to it.event, "old_text" to it.oldText, "new_text" to it.newText,
            "at" to it.at, "actor" to it.actor)
    }
    val memories: List<Map<String, Any?>> = store.list().map {
        linkedMapOf("memory" to ref(it.id), "user" to it.user, "text" to it.text, "created_at" to it.createdAt,
            "updated_at" to it.updatedAt)
    }
}

fun memStore(useFts: Boolean? = null): MemoryStore = MemoryStore(JdbcSql.open(":memory:"), useFts)

fun templatesFromPackage(): Templates = Prompts.load(File(Props.need("memlora.templates")))
