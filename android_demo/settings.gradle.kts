pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
        // An ExecuTorch AAR built from source (scripts/build_android_library.sh) can go in app/libs/.
        flatDir { dirs("app/libs") }
    }
}
rootProject.name = "memlora-android-demo"
include(":core", ":app")
