import Foundation
import XCTest
@testable import MemLoRAKit

#if os(macOS) || os(Linux)
/// Every section of a freshly exported bundle's conformance.json (MEMLORA_BUNDLE), the host
/// engine being `python -m memlora.serve` on the exported ONNX model (as in the Kotlin tests).
final class ConformanceTests: XCTestCase {
    static var bundle: MemLoRABundle?
    static var engine: HostEngine?

    override class func setUp() {
        super.setUp()
        do {
            bundle = try MemLoRABundle.open(try Props.file("MEMLORA_BUNDLE"))
            engine = try HostEngine(python: try Props.need("MEMLORA_PYTHON"), bundle: bundle!.root.path)
        } catch {
            print("ConformanceTests setup: \(error)")
        }
    }

    override class func tearDown() {
        engine?.close()
        super.tearDown()
    }

    private func conf() throws -> Conformance {
        guard let b = ConformanceTests.bundle else { throw Props.Missing(description: "bundle not opened (see setup output)") }
        return try Conformance(try b.conformance(), try b.templates())
    }

    private func hostEngine() throws -> HostEngine {
        guard let e = ConformanceTests.engine else { throw Props.Missing(description: "memlora.serve not started (see setup output)") }
        return e
    }

    private func assertSection(_ r: SectionResult, _ minCases: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(r.failures.isEmpty, "\(r.name): \(r.failures.joined(separator: "\n"))", file: file, line: line)
        XCTAssertGreaterThanOrEqual(r.total, minCases, "\(r.name): only \(r.total) checks", file: file, line: line)
    }

    func testPromptsByteEqual() throws { assertSection(try conf().runPrompts(nil), 6) }

    func testPromptIdsThroughTheEngineTokenizer() throws { assertSection(try conf().runPrompts(try hostEngine()), 12) }

    func testEveryParseCase() throws { assertSection(try conf().runParse(), 19) }

    func testTokenizerSection() throws { assertSection(try conf().runTokenizer(try hostEngine()), 20) }

    func testGreedyPrefixesThroughTheExportedModel() throws {
        let e = try hostEngine()
        assertSection(try conf().runGreedy(e, e), 6)
    }

    func testReportIsWrittenAndPasses() throws {
        let e = try hostEngine()
        let report = try conf().runAll(e, e)
        XCTAssertEqual(report["passed"], .bool(true))
        let out = URL(fileURLWithPath: ProcessInfo.processInfo.environment["MEMLORA_REPORT"] ?? ".build/conformance-report.json")
        try FileManager.default.createDirectory(at: out.deletingLastPathComponent(), withIntermediateDirectories: true)
        try (report.dumps() + "\n").write(to: out, atomically: true, encoding: .utf8)
    }

    func testBundleRecordsTheExporter() throws {
        guard let b = ConformanceTests.bundle else { throw Props.Missing(description: "bundle not opened") }
        XCTAssertNil(b.runtimeMismatch("onnxruntime", try J.str(b.exporter["onnxruntime"], "exporter.onnxruntime")))
        XCTAssertTrue(b.runtimeMismatch("executorch", "0.7.0")?.contains("major") == true)
    }
}
#endif
