import Foundation

/// A bundle that cannot be used: the message names the file and the fix.
public struct BundleError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}

public struct BundleFile {
    public let path: String
    public let bytes: Int64
    public let sha256: String
}

/// One artifact row of the manifest (`backends/base.py` Artifact).
public struct BundleArtifact {
    public let backend: String
    public let adapterMode: String
    public let quant: String
    public let adapters: [String]
    public let files: [String: String]
    public let maxSeqLen: Int?
    public let meta: JSONObject
    public var key: String { "\(backend)/\(adapterMode)-\(quant)" }
}

/// A memlora bundle folder: `manifest.json` read and checked (format, version, every file's size
/// and sha256), the tokenizer path, the prompt templates and the artifacts. Mirrors
/// `memlora/bundle.py` `read_manifest` + `verify_files` (and the Kotlin core's `Bundle`).
public final class MemLoRABundle {
    public static let format = "memlora-bundle"
    public static let formatVersion: Int64 = 1

    public let root: URL
    public let manifest: JSONObject

    private init(root: URL, manifest: JSONObject) {
        self.root = root
        self.manifest = manifest
    }

    /// Read and sanity-check the manifest; `verify` also hashes every listed file, reporting
    /// (bytes done, bytes total, file) to `progress`.
    public static func open(_ root: URL, verify: Bool = true,
                            progress: ((Int64, Int64, String) -> Void)? = nil) throws -> MemLoRABundle {
        let mf = root.appendingPathComponent("manifest.json")
        guard FileManager.default.fileExists(atPath: mf.path) else {
            throw BundleError("\(root.path): no manifest.json; point at a folder written by memlora export")
        }
        let parsed: JSON
        do {
            parsed = try JSON.parse(try String(contentsOf: mf, encoding: .utf8))
        } catch let e as JSONError {
            throw BundleError("\(mf.path): manifest.json is not valid JSON (\(e.message)); re-run memlora export")
        }
        guard let m = parsed.object else { throw BundleError("\(mf.path): manifest.json is not a JSON object; re-run memlora export") }
        if m["format"]?.string != format {
            throw BundleError("\(mf.path): not a memlora bundle manifest (format \((m["format"] ?? .null).dumps())); re-run memlora export")
        }
        let version: Int64
        if case .int(let v)? = m["format_version"] { version = v } else { version = 0 }
        if version > formatVersion {
            throw BundleError("\(mf.path): bundle format \(version) is newer than this app reads (\(formatVersion)); update the app or re-export with a matching memlora")
        }
        if version < 1 {
            throw BundleError("\(mf.path): bundle format \((m["format_version"] ?? .null).dumps()) is not supported; re-run memlora export")
        }
        let b = MemLoRABundle(root: root, manifest: m)
        _ = try b.model()
        if verify {
            let failures = try b.verifyFiles(progress: progress)
            if !failures.isEmpty {
                throw BundleError("\(root.path): \(failures.count) file(s) fail the manifest check: "
                    + failures.prefix(5).joined(separator: "; ") + "; copy the bundle again or re-run memlora export")
            }
        }
        return b
    }

    public func files() throws -> [BundleFile] {
        try J.list(manifest["files"] ?? .array([]), "manifest files").map {
            let o = try J.obj($0, "manifest files[]")
            var bytes: Int64 = -1
            if case .int(let n)? = o["bytes"] { bytes = n }
            return BundleFile(path: try J.str(o["path"], "files[].path"), bytes: bytes, sha256: try J.str(o["sha256"], "files[].sha256"))
        }
    }

    public func model() throws -> JSONObject {
        guard let m = manifest["model"]?.object else { throw BundleError("\(root.path)/manifest.json: no model section; re-run memlora export") }
        return m
    }

    public var chatFormat: String { (try? model())?["chat_format"]?.string ?? "" }

    public var tokenizer: URL { root.appendingPathComponent(manifest["tokenizer"]?.string ?? "tokenizer.json") }

    public var adapterNames: [String] { (manifest["adapters"]?.array ?? []).compactMap { $0["name"]?.string } }

    /// `manifest["exporter"]`: package versions that wrote the bundle (e.g. "coremltools": "9.0").
    public var exporter: JSONObject { manifest["exporter"]?.object ?? JSONObject() }

    public func artifacts() throws -> [BundleArtifact] {
        try J.list(manifest["artifacts"] ?? .array([]), "artifacts").map {
            let o = try J.obj($0, "artifacts[]")
            var files: [String: String] = [:]
            for (k, v) in try J.obj(o["files"], "artifacts[].files").pairs { files[k] = try J.str(v, "artifact file") }
            return BundleArtifact(backend: try J.str(o["backend"], "backend"), adapterMode: try J.str(o["adapter_mode"], "adapter_mode"),
                                  quant: try J.str(o["quant"], "quant"), adapters: try J.strs(o["adapters"] ?? .array([]), "adapters"),
                                  files: files, maxSeqLen: o["max_seq_len"]?.int, meta: o["meta"]?.object ?? JSONObject())
        }
    }

    /// The artifact for `backend`, preferring external adapters and no quantization (`runtime.select_artifact`).
    public func selectArtifact(_ backend: String, adapterMode: String? = nil, quant: String? = nil) throws -> BundleArtifact {
        let all = try artifacts()
        let rows = all.filter { $0.backend == backend }
        if rows.isEmpty {
            let have = Set(all.map { $0.backend }).sorted()
            throw BundleError("bundle has no \(backend) artifact (it has: \(have.isEmpty ? "none" : have.joined(separator: ", "))); re-export with --backend \(backend)")
        }
        let pick = rows.filter { (adapterMode == nil || $0.adapterMode == adapterMode) && (quant == nil || $0.quant == quant) }
        if pick.isEmpty {
            throw BundleError("bundle has no \(backend) artifact with adapter mode \(adapterMode ?? "any") and quant \(quant ?? "any") (it has: \(rows.map { $0.adapterMode + "/" + $0.quant }.joined(separator: ", ")))")
        }
        func rank(_ a: BundleArtifact) -> (Int, Int) { (a.adapterMode != "external" ? 1 : 0, a.quant != "none" ? 1 : 0) }
        return pick.enumerated().min { rank($0.element) != rank($1.element) ? rank($0.element) < rank($1.element) : $0.offset < $1.offset }!.element
    }

    /// Whether this bundle's artifacts for `runtime` were written by the same major version the
    /// app runs (`runtimeVersion`). Nil when they match; otherwise the message to show. A bundle
    /// without `exporter` is refused too: it cannot prove what wrote its programs.
    public func runtimeMismatch(_ runtime: String, _ runtimeVersion: String) -> String? {
        guard let v = exporter[runtime]?.string else {
            return "bundle does not record which \(runtime) version wrote it (manifest has no exporter.\(runtime)); re-export with a memlora that records it"
        }
        let a = v.split(separator: ".").first.map(String.init) ?? v
        let b = runtimeVersion.split(separator: ".").first.map(String.init) ?? runtimeVersion
        return a == b ? nil : "bundle was written by \(runtime) \(v) but this app runs \(runtime) \(runtimeVersion) (major \(a) != \(b)); re-export with \(runtime) \(b).x or use a matching app build"
    }

    /// Every listed file exists with its size and sha256; returns the failures (`verify_files`).
    public func verifyFiles(progress: ((Int64, Int64, String) -> Void)? = nil) throws -> [String] {
        let list = try files()
        let total = list.reduce(Int64(0)) { $0 + max(0, $1.bytes) }
        var done: Int64 = 0
        var failures: [String] = []
        for f in list {
            let p = root.appendingPathComponent(f.path)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p.path, isDirectory: &isDir), !isDir.boolValue else {
                failures.append("\(f.path): missing"); done += max(0, f.bytes); continue
            }
            let size = (try FileManager.default.attributesOfItem(atPath: p.path)[.size] as? NSNumber)?.int64Value ?? -1
            if size != f.bytes {
                failures.append("\(f.path): sha256 mismatch (size \(size) != \(f.bytes))"); done += max(0, f.bytes); continue
            }
            let h = try SHA256Hasher.file(p) { n in done += Int64(n); progress?(done, total, f.path) }
            if h != f.sha256 { failures.append("\(f.path): sha256 mismatch") }
        }
        return failures
    }

    public func templates() throws -> Templates {
        let dir = root.appendingPathComponent(manifest["prompts"]?.string ?? "prompts")
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw BundleError("\(dir.path): bundle has no prompts/ folder; re-run memlora export")
        }
        do { return try Prompts.load(dir) } catch let e as TemplateError {
            throw BundleError("\(dir.path): bad prompt templates: \(e.message); re-run memlora export")
        }
    }

    public func conformance() throws -> JSONObject {
        let f = root.appendingPathComponent(manifest["conformance"]?.string ?? "conformance.json")
        guard FileManager.default.fileExists(atPath: f.path) else { throw BundleError("\(f.path): bundle has no conformance.json; re-run memlora export") }
        return try J.obj(try JSON.parse(try String(contentsOf: f, encoding: .utf8)), "conformance.json")
    }
}
