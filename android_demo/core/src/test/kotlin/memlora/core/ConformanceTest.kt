package memlora.core

import org.junit.AfterClass
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.BeforeClass
import org.junit.Test
import java.io.File

/** Every section of a freshly exported bundle's conformance.json (`memlora.bundle`). */
class ConformanceTest {
    companion object {
        lateinit var bundle: Bundle
        var engine: HostEngine? = null

        @BeforeClass @JvmStatic fun open() {
            bundle = Bundle.open(Props.file("memlora.bundle"))
            engine = HostEngine(Props.need("memlora.python"), bundle.root.path)
        }

        @AfterClass @JvmStatic fun close() { engine?.close() }
    }

    private fun conf() = Conformance(bundle.conformance(), bundle.templates())

    private fun assertSection(r: SectionResult, minCases: Int) {
        assertTrue("${r.name}: ${r.failures.joinToString("\n")}", r.failures.isEmpty())
        assertTrue("${r.name}: only ${r.total} checks", r.total >= minCases)
    }

    @Test fun promptsByteEqual() = assertSection(conf().runPrompts(null), 6)

    @Test fun promptIdsThroughTheEngineTokenizer() = assertSection(conf().runPrompts(engine), 12)

    @Test fun everyParseCase() = assertSection(conf().runParse(), 19)

    @Test fun tokenizerSection() = assertSection(conf().runTokenizer(engine), 20)

    @Test fun greedyPrefixesThroughTheExportedModel() = assertSection(conf().runGreedy(engine!!, engine), 6)

    @Test fun reportIsWrittenAndPasses() {
        val report = conf().runAll(engine, engine)
        assertEquals(true, report["passed"])
        val out = File(System.getProperty("memlora.report") ?: "build/conformance-report.json")
        out.absoluteFile.parentFile.mkdirs()
        out.writeText(Json.dumps(report) + "\n", Charsets.UTF_8)
    }

    @Test fun bundleRecordsTheExporter() {
        assertEquals(null, bundle.runtimeMismatch("onnxruntime", bundle.exporter["onnxruntime"] as String))
        assertTrue(bundle.runtimeMismatch("executorch", "0.7.0")!!.contains("major"))
    }
}
