import Foundation
import XCTest
@testable import MemLoRAKit

final class JSONTests: XCTestCase {
    func testStrictLikePython() throws {
        for bad in ["{a: 1}", "{'a': 1}", "[1,]", "{\"a\": 1,}", "\"tab\there\"", "{\"a\" 1}", "01", "1.", "\u{FEFF}{}", "", " ", "[", "nul"] {
            XCTAssertNil(JSON.parseOrNil(bad), "should refuse: \(bad)")
        }
        XCTAssertEqual(try JSON.parse(" {\"a\": 1, \"a\": 2}\n"), ["a": 2])
        XCTAssertTrue(try JSON.parse("NaN").number!.isNaN)
        XCTAssertEqual(try JSON.parse("[-1.5e3, 0, \"\\u00e9\\ud83c\\udf08\"]"), [.double(-1.5e3), 0, "\u{e9}\u{1F308}"])
    }

    func testDumpsLikePython() {
        let v: JSON = ["t": "q\"b\\n\n\r\t\u{01}\u{7f} é🌈 <|im_end|>", "l": [1, true, nil]]
        XCTAssertEqual(v.dumps(), "{\"t\": \"q\\\"b\\\\n\\n\\r\\t\\u0001\u{7f} é🌈 <|im_end|>\", \"l\": [1, true, null]}")
    }

    /// Why the core has its own parser: Foundation's JSONSerialization refuses what Python accepts
    /// (NaN) and drops key order, so parse results and re-dumped text would differ from Python's.
    func testFoundationJsonDiffers() throws {
        XCTAssertThrowsError(try JSONSerialization.jsonObject(with: Data("[NaN]".utf8)))
        XCTAssertEqual(Parsing.parseExtract("{facts: ['unquoted', ok]}").facts.count, 0)
        XCTAssertEqual(try JSON.parse("{\"b\": 1, \"a\": 2}").dumps(), "{\"b\": 1, \"a\": 2}")
    }

    func testPythonStrings() {
        XCTAssertEqual(PyText.strip("\u{a0}\u{2003} x\u{85}\u{3000}"), "x")
        XCTAssertEqual(PyText.len("🌈a"), 2)
        XCTAssertEqual(PyText.len("👨‍👩‍👧"), 5)  // code points, not one grapheme
        XCTAssertEqual(PyText.tokens("Café, x_1! ½"), ["caf\u{e9}", "x_1", "\u{bd}"])
    }
}
