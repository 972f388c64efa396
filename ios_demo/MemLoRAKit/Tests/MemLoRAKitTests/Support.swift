import Foundation
import XCTest
@testable import MemLoRAKit

/// Test inputs, set by `host_test.sh` as environment variables (the Kotlin tests read the same
/// paths as system properties): MEMLORA_BUNDLE, MEMLORA_FIXTURE, MEMLORA_PYTHON, MEMLORA_TEMPLATES,
/// MEMLORA_LOCOMO, MEMLORA_PYSTORE, MEMLORA_REPORT, MEMLORA_TURNS, MEMLORA_SESSIONS, MEMLORA_QUESTIONS.
enum Props {
    struct Missing: Error, CustomStringConvertible { let description: String }

    static func need(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else {
            throw Missing(description: "environment variable \(name) not set (run ios_demo/MemLoRAKit/host_test.sh)")
        }
        return v
    }

    static func file(_ name: String) throws -> URL {
        let u = URL(fileURLWithPath: try need(name))
        guard FileManager.default.fileExists(atPath: u.path) else { throw Missing(description: "\(name): \(u.path) does not exist") }
        return u
    }

    static func int(_ name: String, _ fallback: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap { Int($0) } ?? fallback
    }
}

#if os(macOS) || os(Linux)
/// The host `Engine`: `python -m memlora.serve BUNDLE --backend B` spoken to in JSON lines.
final class HostEngine: Engine, TokenizerAccess {
    private let proc = Process()
    private let stdin = Pipe()
    private let stdout = Pipe()
    private var buffer = Data()
    private var nextId: Int64 = 0
    private(set) var info = JSONObject()
    private(set) var adapters: [String] = []

    init(python: String, bundle: String, backend: String = "onnx") throws {
        proc.executableURL = URL(fileURLWithPath: python)
        proc.arguments = ["-m", "memlora.serve", bundle, "--backend", backend]
        proc.standardInput = stdin
        proc.standardOutput = stdout
        proc.standardError = FileHandle.standardError
        try proc.run()
        guard let line = nextLine() else { throw ScriptError(description: "memlora.serve exited before ready") }
        let ready = try J.obj(try JSON.parse(line), "ready")
        if ready["ready"]?.bool != true { throw ScriptError(description: "memlora.serve: \((ready["error"] ?? .null).dumps())") }
        info = ready
        adapters = try J.strs(ready["adapters"], "adapters")
    }

    private func nextLine() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<nl]
                buffer = Data(buffer[(nl + 1)...])
                return String(decoding: line, as: UTF8.self)
            }
            let chunk = stdout.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            buffer.append(chunk)
        }
    }

    private func call(_ req: JSONObject) throws -> JSONObject {
        nextId += 1
        var r = req
        r["id"] = .int(nextId)
        stdin.fileHandleForWriting.write((JSON.object(r).dumps() + "\n").data(using: .utf8)!)
        guard let line = nextLine() else { throw ScriptError(description: "memlora.serve exited") }
        let resp = try J.obj(try JSON.parse(line), "response")
        if let e = resp["error"] { throw ScriptError(description: "memlora.serve: \(e.dumps())") }
        return resp
    }

    func generate(adapter: String?, prompt: String, settings: GenerationSettings, onToken: ((String) -> Void)?) throws -> GenerationResult {
        let r = try call(JSONObject([("op", "generate"), ("adapter", JSON(adapter)), ("prompt", .string(prompt)), ("settings", settings.toJSON())]))
        if let cb = onToken { for p in try J.strs(r["pieces"], "pieces") { cb(p) } }
        return GenerationResult(text: try J.str(r["text"], "text"), tokenIds: try J.ints(r["ids"], "ids"),
                                promptTokens: try J.int(r["prompt_tokens"], "prompt_tokens"), stoppedBy: try J.str(r["stopped_by"], "stopped_by"),
                                prefillMs: r["prefill_ms"]?.number ?? 0, decodeMs: r["decode_ms"]?.number ?? 0)
    }

    func encode(_ text: String) throws -> [Int] { try J.ints(try call(JSONObject([("op", "encode"), ("text", .string(text))]))["ids"], "ids") }

    func decode(_ ids: [Int]) throws -> String { try J.str(try call(JSONObject([("op", "decode"), ("ids", JSON(ids))]))["text"], "text") }

    func close() {
        _ = try? call(JSONObject([("op", "quit")]))
        proc.waitUntilExit()
    }
}
#endif

/// The store as the fixtures write it: memories m1, m2, ... in creation order (first history event).
final class StoreDump {
    private(set) var refs: [String: String] = [:]

    func ref(_ id: String) -> String {
        if let have = refs[id] { return have }
        let r = "m\(refs.count + 1)"
        refs[id] = r
        return r
    }

    private(set) var history: JSON = .array([])
    private(set) var memories: JSON = .array([])

    init(_ store: MemoryStore) throws {
        history = .array(try store.history().map {
            ["memory": .string(ref($0.memoryId)), "event": .string($0.event), "old_text": JSON($0.oldText),
             "new_text": JSON($0.newText), "at": .string($0.at), "actor": .string($0.actor)]
        })
        memories = .array(try store.list().map {
            ["memory": .string(ref($0.id)), "user": .string($0.user), "text": .string($0.text),
             "created_at": .string($0.createdAt), "updated_at": .string($0.updatedAt)]
        })
    }
}

func memStore(useFts: Bool? = nil) throws -> MemoryStore { try MemoryStore(try SQLiteDatabase(path: ":memory:"), useFts: useFts) }

func templatesFromPackage() throws -> Templates { try Prompts.load(try Props.file("MEMLORA_TEMPLATES")) }

func readJSON(_ url: URL) throws -> JSONObject { try J.obj(try JSON.parse(try String(contentsOf: url, encoding: .utf8)), url.lastPathComponent) }

/// Compare two JSON values by their Python `json.dumps` text (what the Kotlin tests compare),
/// code point for code point (Swift's String `==` would accept canonically equivalent text).
func XCTAssertSameJSON(_ want: JSON?, _ got: JSON?, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertSameText((want ?? .null).dumps(), (got ?? .null).dumps(), message, file: file, line: line)
}

func XCTAssertSameText(_ want: String, _ got: String, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(PyText.same(want, got), "\(message): got \(JSON.quote(got)), expected \(JSON.quote(want))", file: file, line: line)
}
