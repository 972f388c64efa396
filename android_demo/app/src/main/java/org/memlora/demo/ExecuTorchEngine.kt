package org.memlora.demo

import memlora.core.Bundle
import memlora.core.BundleArtifact
import memlora.core.BundleError
import memlora.core.Engine
import memlora.core.GenerationResult
import memlora.core.GenerationSettings
import memlora.core.J
import memlora.core.Json
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule
import java.io.File

/**
 * The ExecuTorch engine: one [LlmModule] per adapter program. In external mode every program is
 * constructed with `dataFiles = [foundation.ptd]` (the shared base weights, mmapped once by the
 * OS); in fused mode each `.pte` is self-contained. `resetContext()` runs before every operation:
 * a KV cache filled under one adapter is garbage under another.
 */
class ExecuTorchEngine(private val bundle: Bundle, val artifact: BundleArtifact) : Engine {
    private val modules = LinkedHashMap<String, LlmModule>()
    @Volatile private var running: LlmModule? = null
    @Volatile private var stopRequested = false
    override val adapters: List<String> = artifact.adapters

    /** Metrics of the last call, from `onStats` (computed as LlamaDemo does). */
    var lastStats: Metrics? = null
        private set

    data class Metrics(val promptTokens: Int, val generatedTokens: Int, val ttftMs: Double,
                       val prefillTokPerS: Double, val decodeTokPerS: Double)

    init {
        if (artifact.backend != "executorch") throw BundleError("not an ExecuTorch artifact: ${artifact.key}")
        val tokenizer = bundle.tokenizer.path
        val data = artifact.files["foundation"]?.let { listOf(File(bundle.root, it).path) } ?: emptyList()
        for (name in artifact.adapters) {
            val rel = artifact.files["adapter:$name"] ?: artifact.files["model:$name"]
                ?: throw BundleError("artifact ${artifact.key} lists adapter $name but no program for it")
            val module = LlmModule(LlmModule.MODEL_TYPE_TEXT, File(bundle.root, rel).path, tokenizer, 0f, data)
            try {
                module.load()
            } catch (e: RuntimeException) {
                module.close()
                throw BundleError("ExecuTorch could not load $rel (${e.message}): re-export with executorch ${BuildConfig.EXECUTORCH_VERSION}")
            }
            modules[name] = module
        }
    }

    override fun generate(adapter: String?, prompt: String, settings: GenerationSettings,
                          onToken: ((String) -> Unit)?): GenerationResult {
        val module = modules[adapter ?: ""] ?: throw IllegalArgumentException("no ExecuTorch program for adapter $adapter")
        module.resetContext()
        stopRequested = false
        running = module
        val text = StringBuilder()
        var emitted = 0
        var pieces = 0
        var stoppedBy = "eos"
        var statsJson: String? = null
        var error: String? = null
        val stops = settings.stop
        val callback = object : LlmCallback {
            override fun onResult(result: String) {
                if (stoppedBy == "stop" || stoppedBy == "length") return
                pieces++
                text.append(result)
                val cut = stops.map { text.indexOf(it, maxOf(0, emitted - it.length)) }.filter { it >= 0 }.minOrNull()
                if (cut != null) {
                    text.setLength(cut)
                    stoppedBy = "stop"
                    module.stop()
                } else if (pieces >= settings.maxNewTokens) {
                    stoppedBy = "length"
                    module.stop()
                } else if (stopRequested) {
                    stoppedBy = "user"
                }
                // Stream all but a tail that could still begin a stop string.
                val hold = if (stoppedBy == "eos" || stoppedBy == "user") heldBack(text, stops) else 0
                val upto = text.length - hold
                if (upto > emitted) {
                    onToken?.invoke(text.substring(emitted, upto))
                    emitted = upto
                }
            }

            override fun onStats(stats: String) { statsJson = stats }

            override fun onError(errorCode: Int, message: String) { error = "ExecuTorch error $errorCode: $message" }
        }
        val seqLen = artifact.maxSeqLen ?: 2048
        try {
            module.generate(prompt, seqLen, callback, false, settings.temperature.toFloat(), 0, 0)
        } finally {
            running = null
        }
        error?.let { throw IllegalStateException(it) }
        if (emitted < text.length) onToken?.invoke(text.substring(emitted))
        val m = statsJson?.let { parseStats(it) }
        lastStats = m
        val prefillMs = m?.let { if (it.prefillTokPerS > 0) it.promptTokens * 1000.0 / it.prefillTokPerS else 0.0 } ?: 0.0
        val decodeMs = m?.let { if (it.decodeTokPerS > 0) it.generatedTokens * 1000.0 / it.decodeTokPerS else 0.0 } ?: 0.0
        return GenerationResult(text.toString(), emptyList(), m?.promptTokens ?: 0, stoppedBy, prefillMs, decodeMs, m?.ttftMs ?: 0.0)
    }

    override fun stop() {
        stopRequested = true
        running?.stop()
    }

    override fun close() {
        for (m in modules.values) m.close()
        modules.clear()
    }

    private fun heldBack(text: CharSequence, stops: List<String>): Int {
        var best = 0
        for (s in stops) for (k in s.length - 1 downTo 1) {
            if (k > best && text.endsWith(s.substring(0, k))) best = k
        }
        return best
    }

    companion object {
        /** `onStats` JSON -> metrics, as LlamaDemo computes them (ms timestamps from the runner). */
        fun parseStats(stats: String): Metrics? {
            val o = try { J.obj(Json.parse(stats), "stats") } catch (e: Exception) { return null }
            fun num(k: String): Double = (o[k] as? Number)?.toDouble() ?: 0.0
            val prompt = num("prompt_tokens")
            val generated = num("generated_tokens")
            val start = num("inference_start_ms")
            val promptEnd = num("prompt_eval_end_ms")
            val first = num("first_token_ms")
            val end = num("inference_end_ms")
            val prefill = if (promptEnd > start) prompt * 1000.0 / (promptEnd - start) else 0.0
            val decode = if (end > promptEnd) generated * 1000.0 / (end - promptEnd) else 0.0
            return Metrics(prompt.toInt(), generated.toInt(), first - start, prefill, decode)
        }

        /** Bytes resident once every program is loaded: the shared .ptd once plus every .pte. */
        fun residentBytes(bundle: Bundle, artifact: BundleArtifact): Long =
            artifact.files.values.toSet().sumOf { File(bundle.root, it).length() }
    }
}
