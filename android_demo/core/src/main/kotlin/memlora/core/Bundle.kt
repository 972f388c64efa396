package memlora.core

import java.io.File
import java.io.FileInputStream
import java.security.MessageDigest

/** A bundle that cannot be used: [message] names the file and the fix. */
class BundleError(message: String) : Exception(message)

class BundleFile(val path: String, val bytes: Long, val sha256: String)

/** One artifact row of the manifest (`backends/base.py` Artifact). */
class BundleArtifact(val backend: String, val adapterMode: String, val quant: String, val adapters: List<String>,
                     val files: Map<String, String>, val maxSeqLen: Int?, val meta: Map<String, Any?>) {
    val key: String get() = "$backend/$adapterMode-$quant"
}

/**
 * A memlora bundle folder: `manifest.json` read and checked (format, version, every file's size
 * and sha256), the tokenizer path, the prompt templates and the artifacts. Mirrors
 * `memlora/bundle.py` `read_manifest` + `verify_files`.
 */
class Bundle private constructor(val root: File, val manifest: Map<String, Any?>) {
    companion object {
        const val FORMAT = "memlora-bundle"
        const val FORMAT_VERSION = 1

        /** Read and sanity-check the manifest; [verify] also hashes every listed file. */
        fun open(root: File, verify: Boolean = true, progress: ((Long, Long, String) -> Unit)? = null): Bundle {
            val mf = File(root, "manifest.json")
            if (!mf.isFile) throw BundleError("${root.path}: no manifest.json; point at a folder written by memlora export")
            val parsed = try { Json.parse(mf.readText(Charsets.UTF_8)) } catch (e: JsonError) {
                throw BundleError("${mf.path}: manifest.json is not valid JSON (${e.message}); re-run memlora export")
            }
            @Suppress("UNCHECKED_CAST")
            val m = parsed as? Map<String, Any?> ?: throw BundleError("${mf.path}: manifest.json is not a JSON object; re-run memlora export")
            if (m["format"] != FORMAT) throw BundleError("${mf.path}: not a memlora bundle manifest (format ${Json.dumps(m["format"])}); re-run memlora export")
            val version = (m["format_version"] as? Long) ?: 0L
            if (version > FORMAT_VERSION) throw BundleError("${mf.path}: bundle format $version is newer than this app reads ($FORMAT_VERSION); update the app or re-export with a matching memlora")
            if (version < 1) throw BundleError("${mf.path}: bundle format ${Json.dumps(m["format_version"])} is not supported; re-run memlora export")
            val b = Bundle(root, m)
            b.model()
            if (verify) {
                val failures = b.verifyFiles(progress)
                if (failures.isNotEmpty()) throw BundleError("${root.path}: ${failures.size} file(s) fail the manifest check: " +
                    failures.take(5).joinToString("; ") + "; copy the bundle again (adb push) or re-run memlora export")
            }
            return b
        }

        fun sha256(f: File, onBytes: ((Long) -> Unit)? = null): String {
            val md = MessageDigest.getInstance("SHA-256")
            val buf = ByteArray(1 shl 20)
            FileInputStream(f).use { input ->
                while (true) {
                    val n = input.read(buf)
                    if (n < 0) break
                    md.update(buf, 0, n)
                    onBytes?.invoke(n.toLong())
                }
            }
            val sb = StringBuilder()
            for (b in md.digest()) sb.append(String.format("%02x", b))
            return sb.toString()
        }
    }

    val files: List<BundleFile> = J.list(manifest["files"] ?: emptyList<Any?>(), "manifest files").map {
        val o = J.obj(it, "manifest files[]")
        BundleFile(J.str(o["path"], "files[].path"), (o["bytes"] as? Long) ?: -1L, J.str(o["sha256"], "files[].sha256"))
    }

    val chatFormat: String get() = (model()["chat_format"] as? String) ?: ""

    val tokenizer: File get() = File(root, (manifest["tokenizer"] as? String) ?: "tokenizer.json")

    val adapterNames: List<String> get() =
        J.list(manifest["adapters"] ?: emptyList<Any?>(), "adapters").map { J.str(J.obj(it, "adapters[]")["name"], "adapters[].name") }

    /** `manifest["exporter"]`: package versions that wrote the bundle (e.g. "executorch": "1.4.1"). */
    val exporter: Map<String, Any?> get() = (manifest["exporter"] as? Map<*, *>)?.entries?.associate { it.key.toString() to it.value } ?: emptyMap()

    fun model(): Map<String, Any?> {
        val m = manifest["model"] as? Map<*, *> ?: throw BundleError("${root.path}/manifest.json: no model section; re-run memlora export")
        return m.entries.associate { it.key.toString() to it.value }
    }

    fun artifacts(): List<BundleArtifact> = J.list(manifest["artifacts"] ?: emptyList<Any?>(), "artifacts").map {
        val o = J.obj(it, "artifacts[]")
        val files = J.obj(o["files"], "artifacts[].files").entries.associate { e -> e.key to J.str(e.value, "artifact file") }
        BundleArtifact(J.str(o["backend"], "backend"), J.str(o["adapter_mode"], "adapter_mode"), J.str(o["quant"], "quant"),
            J.strs(o["adapters"] ?: emptyList<Any?>(), "adapters"), files, (o["max_seq_len"] as? Long)?.toInt(),
            (o["meta"] as? Map<*, *>)?.entries?.associate { e -> e.key.toString() to e.value } ?: emptyMap())
    }

    /** The artifact for [backend], preferring external adapters and no quantization (`runtime.select_artifact`). */
    fun selectArtifact(backend: String, adapterMode: String? = null, quant: String? = null): BundleArtifact {
        val rows = artifacts().filter { it.backend == backend }
        if (rows.isEmpty()) throw BundleError("bundle has no $backend artifact (it has: ${artifacts().map { it.backend }.toSet().sorted().ifEmpty { listOf("none") }.joinToString(", ")}); re-export with --backend $backend")
        val pick = rows.filter { (adapterMode == null || it.adapterMode == adapterMode) && (quant == null || it.quant == quant) }
        if (pick.isEmpty()) throw BundleError("bundle has no $backend artifact with adapter mode ${adapterMode ?: "any"} and quant ${quant ?: "any"} (it has: ${rows.joinToString(", ") { it.adapterMode + "/" + it.quant }})")
        return pick.sortedWith(compareBy<BundleArtifact>({ it.adapterMode != "external" }, { it.quant != "none" }))[0]
    }

    /**
     * Whether this bundle's artifacts for [runtime] were written by the same major version the app
     * ships ([runtimeVersion], e.g. "1.4.1" for org.pytorch:executorch-android). Null when they
     * match; otherwise the message to show. A bundle without `exporter` is refused too: it cannot
     * prove what wrote its programs.
     */
    fun runtimeMismatch(runtime: String, runtimeVersion: String): String? {
        val v = exporter[runtime] as? String
            ?: return "bundle does not record which $runtime version wrote it (manifest has no exporter.$runtime); re-export with a memlora that records it"
        val a = v.split('.')[0]
        val b = runtimeVersion.split('.')[0]
        return if (a == b) null else "bundle was written by $runtime $v but this app runs $runtime $runtimeVersion (major $a != $b); re-export with $runtime $b.x or use a matching app build"
    }

    /** Every listed file exists with its size and sha256; returns the failures (`verify_files`). */
    fun verifyFiles(progress: ((Long, Long, String) -> Unit)? = null): List<String> {
        val total = files.fold(0L) { acc, f -> acc + Math.max(0L, f.bytes) }
        var done = 0L
        val failures = ArrayList<String>()
        for (f in files) {
            val p = File(root, f.path)
            if (!p.isFile) { failures.add("${f.path}: missing"); done += Math.max(0L, f.bytes); continue }
            if (p.length() != f.bytes) { failures.add("${f.path}: sha256 mismatch (size ${p.length()} != ${f.bytes})"); done += Math.max(0L, f.bytes); continue }
            val h = sha256(p) { n -> done += n; progress?.invoke(done, total, f.path) }
            if (h != f.sha256) failures.add("${f.path}: sha256 mismatch")
        }
        return failures
    }

    fun templates(): Templates {
        val dir = File(root, (manifest["prompts"] as? String) ?: "prompts")
        if (!dir.isDirectory) throw BundleError("${dir.path}: bundle has no prompts/ folder; re-run memlora export")
        return try { Prompts.load(dir) } catch (e: TemplateError) { throw BundleError("${dir.path}: bad prompt templates: ${e.message}; re-run memlora export") }
    }

    fun conformance(): Map<String, Any?> {
        val f = File(root, (manifest["conformance"] as? String) ?: "conformance.json")
        if (!f.isFile) throw BundleError("${f.path}: bundle has no conformance.json; re-run memlora export")
        return J.obj(Json.parse(f.readText(Charsets.UTF_8)), "conformance.json")
    }
}
