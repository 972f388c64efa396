// :core is plain Kotlin/JVM (no android.*): the memory loop, bundle reading, prompts, parsers, store.
// Its sources stay in the Kotlin subset that Debian's kotlinc 1.3.31 also compiles (see host_test.sh).
plugins {
    alias(libs.plugins.kotlin.jvm)
}

java {
    toolchain { languageVersion.set(JavaLanguageVersion.of(17)) }
}

dependencies {
    testImplementation(libs.junit)
    testImplementation(libs.sqlite.jdbc)
    testImplementation(libs.org.json)
}

tasks.test {
    // The host-only tests need a bundle, the fixture and a Python with memlora; pass them with
    //   ./gradlew :core:test -Pmemlora.bundle=... -Pmemlora.fixture=... -Pmemlora.python=... \
    //       -Pmemlora.locomo=... -Pmemlora.pystore=...
    // (host_test.sh prepares all of them). Without -Pmemlora.bundle only JsonTest runs.
    val props = listOf("memlora.bundle", "memlora.fixture", "memlora.python", "memlora.locomo", "memlora.pystore")
    for (p in props) project.findProperty(p)?.let { systemProperty(p, it.toString()) }
    systemProperty("memlora.templates", rootProject.file("../export/memlora/memory/templates").path)
    if (project.findProperty("memlora.bundle") == null) {
        filter { includeTestsMatching("memlora.core.JsonTest") }
    }
}
