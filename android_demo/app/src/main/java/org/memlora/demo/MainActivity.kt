package org.memlora.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.ScrollableTabRow
import androidx.compose.material3.Slider
import androidx.compose.material3.Tab
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableIntStateOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.unit.dp
import androidx.compose.ui.unit.sp

class MainActivity : ComponentActivity() {
    private val vm: DemoViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent { MaterialTheme { App(vm) } }
    }
}

private val TABS = listOf("Bundle", "Chat", "Memories", "Pipeline", "Settings", "Self-test")

@Composable
fun App(vm: DemoViewModel) {
    var tab by remember { mutableIntStateOf(0) }
    Scaffold(topBar = {
        ScrollableTabRow(selectedTabIndex = tab) {
            TABS.forEachIndexed { i, name -> Tab(selected = tab == i, onClick = { tab = i }, text = { Text(name) }) }
        }
    }) { pad ->
        Column(Modifier.padding(pad).padding(12.dp).fillMaxSize()) {
            Text(vm.status, style = MaterialTheme.typography.bodySmall)
            vm.progress?.let { LinearProgressIndicator(progress = { it }, modifier = Modifier.fillMaxWidth()) }
            vm.ramWarning?.let { Text(it, color = MaterialTheme.colorScheme.error) }
            Spacer(Modifier.height(8.dp))
            when (tab) {
                0 -> BundleScreen(vm)
                1 -> ChatScreen(vm)
                2 -> MemoryScreen(vm)
                3 -> PipelineScreen(vm)
                4 -> SettingsScreen(vm)
                else -> SelfTestScreen(vm)
            }
        }
    }
}

@Composable
fun BundleScreen(vm: DemoViewModel) {
    val context = androidx.compose.ui.platform.LocalContext.current
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.OpenDocumentTree()) { uri ->
        if (uri != null) vm.importAndOpen(context, uri)
    }
    Column {
        Text("adb push bundle ${vm.defaultBundleDir().path}", fontFamily = FontFamily.Monospace, fontSize = 12.sp)
        Button(onClick = { vm.openBundle(vm.defaultBundleDir()) }, enabled = !vm.busy) { Text("Open pushed bundle") }
        Button(onClick = { picker.launch(null) }, enabled = !vm.busy) { Text("Import a folder…") }
    }
}

@Composable
fun ChatScreen(vm: DemoViewModel) {
    var input by remember { mutableStateOf("") }
    Column(Modifier.fillMaxSize()) {
        LazyColumn(Modifier.weight(1f)) {
            items(vm.chat) { m ->
                Card(Modifier.fillMaxWidth().padding(vertical = 4.dp)) {
                    Column(Modifier.padding(8.dp)) {
                        Text((if (m.fromUser) "you: " else "memlora: ") + m.text)
                        if (m.metrics.isNotEmpty()) Text(m.metrics, fontSize = 11.sp)
                        if (m.memoriesUsed.isNotEmpty()) Text("memories used: " + m.memoriesUsed.joinToString(" | "), fontSize = 11.sp)
                    }
                }
            }
            if (vm.streaming.isNotEmpty()) item { Text("memlora: " + vm.streaming) }
        }
        Row {
            OutlinedTextField(input, { input = it }, Modifier.weight(1f), label = { Text("Message") })
            if (vm.busy) Button(onClick = { vm.stop() }) { Text("Stop") }
            else Button(onClick = { vm.send(input); input = "" }, enabled = input.isNotBlank()) { Text("Send") }
        }
    }
}

@Composable
fun MemoryScreen(vm: DemoViewModel) {
    Column {
        Row {
            TextButton(onClick = { vm.refreshMemories() }) { Text("Refresh") }
            TextButton(onClick = { vm.exportMemories() }) { Text("Export JSON") }
            TextButton(onClick = { vm.wipe() }) { Text("Wipe") }
        }
        LazyColumn {
            items(vm.memories) { m ->
                Row(Modifier.fillMaxWidth()) {
                    Text("${m.updatedAt}: ${m.text}", Modifier.weight(1f))
                    TextButton(onClick = { vm.delete(m.id) }) { Text("Delete") }
                }
            }
            item { Text("History", style = MaterialTheme.typography.titleMedium) }
            items(vm.history) { h ->
                Text("${h.at} ${h.event} (${h.actor}): ${h.oldText ?: "∅"} → ${h.newText ?: "∅"}", fontSize = 12.sp)
            }
        }
    }
}

@Composable
fun PipelineScreen(vm: DemoViewModel) {
    LazyColumn {
        items(vm.traces) { t ->
            Card(Modifier.fillMaxWidth().padding(vertical = 4.dp)) {
                Column(Modifier.padding(8.dp)) {
                    Text("${t.op.value} · adapter ${t.adapter} · %.0f ms · ${t.result.stoppedBy}".format(t.totalMs))
                    Text("prompt:\n${t.prompt}", fontFamily = FontFamily.Monospace, fontSize = 10.sp)
                    Text("raw output:\n${t.raw}", fontFamily = FontFamily.Monospace, fontSize = 11.sp)
                    if (t.errors.isNotEmpty()) Text("parse errors: " + t.errors.joinToString("; "), color = MaterialTheme.colorScheme.error)
                }
            }
        }
    }
}

@Composable
fun SettingsScreen(vm: DemoViewModel) {
    val s = vm.settings
    Column(Modifier.verticalScroll(rememberScrollState())) {
        LabeledSlider("extract max new tokens", s.extractTokens, 16, 512) { vm.updateSettings(s.copy(extractTokens = it)) }
        LabeledSlider("update max new tokens", s.updateTokens, 16, 1024) { vm.updateSettings(s.copy(updateTokens = it)) }
        LabeledSlider("answer max new tokens", s.answerTokens, 8, 256) { vm.updateSettings(s.copy(answerTokens = it)) }
        LabeledSlider("temperature x100", (s.temperature * 100).toInt(), 0, 150) { vm.updateSettings(s.copy(temperature = it / 100.0)) }
        LabeledSlider("answer top-k memories", s.answerTopK, 1, 50) { vm.updateSettings(s.copy(answerTopK = it)) }
        LabeledSlider("update top-k memories", s.updateTopK, 1, 20) { vm.updateSettings(s.copy(updateTopK = it)) }
        Text("Threads: ExecuTorch's XNNPACK threadpool sizes itself to the big cores.", fontSize = 12.sp)
    }
}

@Composable
fun LabeledSlider(label: String, value: Int, min: Int, max: Int, onChange: (Int) -> Unit) {
    Text("$label: $value")
    Slider(value = value.toFloat(), onValueChange = { onChange(it.toInt()) }, valueRange = min.toFloat()..max.toFloat())
}

@Composable
fun SelfTestScreen(vm: DemoViewModel) {
    Column(Modifier.verticalScroll(rememberScrollState())) {
        Button(onClick = { vm.runSelfTest() }, enabled = !vm.busy) { Text("Run conformance.json on this device") }
        Text(vm.selfTest, fontFamily = FontFamily.Monospace, fontSize = 12.sp)
    }
}
