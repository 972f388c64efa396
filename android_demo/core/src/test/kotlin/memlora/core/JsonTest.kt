package memlora.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

class JsonTest {
    @Test fun strictLikePython() {
        for (bad in listOf("{a: 1}", "{'a': 1}", "[1,]", "{\"a\": 1,}", "\"tab\there\"", "{\"a\" 1}", "01", "1.", "\uFEFF{}", "", " ", "[", "nul")) {
            assertNull("should refuse: $bad", Json.parseOrNull(bad))
        }
        assertEquals(linkedMapOf("a" to 2L), Json.parse(" {\"a\": 1, \"a\": 2}\n"))
        assertTrue((Json.parse("NaN") as Double).isNaN())
        assertEquals(listOf(-1.5e3, 0L, "\u00e9\ud83c\udf08"), Json.parse("[-1.5e3, 0, \"\\u00e9\\ud83c\\udf08\"]"))
    }

    @Test fun dumpsLikePython() {
        val v = linkedMapOf("t" to "q\"b\\n\n\r\t\u0001\u007f é🌈 <|im_end|>", "l" to listOf(1L, true, null))
        assertEquals("{\"t\": \"q\\\"b\\\\n\\n\\r\\t\\u0001\u007f é🌈 <|im_end|>\", \"l\": [1, true, null]}", Json.dumps(v))
    }

    /** Why the core has its own parser: Android's org.json accepts what Python's json refuses. */
    @Test fun orgJsonIsLenient() {
        val lenient = org.json.JSONObject("{facts: ['unquoted', ok]}")
        assertEquals(2, lenient.getJSONArray("facts").length())
        assertEquals(0, Parsing.parseExtract("{facts: ['unquoted', ok]}").facts.size)
    }

    @Test fun pythonStrings() {
        assertEquals("x", PyText.strip("\u00a0\u2003 x\u0085\u3000"))
        assertEquals(2, PyText.len("🌈a"))
        assertEquals(listOf("caf\u00e9", "x_1", "\u00bd"), PyText.tokens("Café, x_1! ½"))
    }
}
