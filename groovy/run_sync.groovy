/**
 * qupath-rkd: export, run `qupath-rkd sync`, import — all from inside QuPath (QuPath 0.5 / 0.6).
 *
 * Use: set QUPATH_RKD below to the ABSOLUTE path of the qupath-rkd executable (e.g.
 *      /home/me/qupath-rkd/.venv/bin/qupath-rkd, or C:\\tools\\qupath-rkd\\Scripts\\qupath-rkd.exe),
 *      open the project and any image, Automate > Script editor, open this file, Run (once;
 *      NOT "Run for project" — it handles every image itself).
 *
 * Steps:
 *   1. exports the annotations of every image of the project to
 *      <project>/qupath-rkd/annotations/<entryID>.geojson + manifest.json (as
 *      export_annotations.groovy does; the open image's unsaved annotations are included);
 *   2. runs QUPATH_RKD sync <project folder> EXTRA_ARGS... as a process — an argument list,
 *      no shell — printing its output here; if it fails (any non-zero exit code), stops
 *      there with an error: no image is changed or saved (the predictions of the slides the
 *      sync completed are on disk; import them with import_predictions.groovy if you want);
 *   3. imports <project>/qupath-rkd/predictions/<entryID>.geojson into every image that has one
 *      (as import_predictions.groovy does: removes only detections named "qupath-rkd...", adds
 *      the new ones) with the slide-level values of <entryID>.slide.json (root-object
 *      measurements and project-entry metadata, as import_predictions.groovy describes) and
 *      saves those images. The open image is updated in place.
 * Save your work first (File > Save): images other than the open one are read from disk.
 */

import static qupath.lib.scripting.QP.*

import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.StandardCopyOption
import qupath.lib.io.GsonTools
import qupath.lib.io.PathIO

// ---- parameters ------------------------------------------------------------------------
String QUPATH_RKD = "/ABSOLUTE/PATH/TO/qupath-rkd"   // the executable, absolute path
List<String> EXTRA_ARGS = []                          // e.g. ["--backend", "geojson", "--slide-root", "/data/slides"]
boolean IMPORT_HEATMAP_TILES = true
long TIMEOUT_MINUTES = 0                              // 0 = wait as long as sync runs
String TOOL_TAG = "qupath-rkd"
// -----------------------------------------------------------------------------------------

def project = getProject()
if (project == null) {
    throw new IllegalStateException("qupath-rkd: open a project first")
}
File exe = new File(QUPATH_RKD)
if (!exe.isAbsolute() || !exe.isFile() || !exe.canExecute()) {
    throw new IllegalArgumentException("qupath-rkd: QUPATH_RKD must be the absolute path of the qupath-rkd executable; '" + QUPATH_RKD + "' is not (edit the parameters at the top of this script)")
}
Path projectDir = project.getPath().getParent()
Path annotationsDir = projectDir.resolve("qupath-rkd").resolve("annotations")
Path predictionsDir = projectDir.resolve("qupath-rkd").resolve("predictions")
Files.createDirectories(annotationsDir)

def currentEntry = getProjectEntry()
def currentData = getCurrentImageData()

// 1. Export every image's annotations and the manifest.
def gson = GsonTools.getInstance(true)
def records = []
for (def entry : project.getImageList()) {
    String entryId = entry.getID()
    boolean isOpen = currentEntry != null && currentEntry.getID() == entryId && currentData != null
    def hierarchy = isOpen ? currentData.getHierarchy() : entry.readHierarchy()
    def annotations = hierarchy.getAnnotationObjects()
    Path target = annotationsDir.resolve(entryId + ".geojson")
    Path tmp = annotationsDir.resolve("." + entryId + ".geojson.tmp")
    exportObjectsToGeoJson(annotations, tmp.toString(), "FEATURE_COLLECTION")
    Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)
    def uris = entry.metaClass.respondsTo(entry, "getURIs") ? entry.getURIs() : entry.getServerURIs()
    def uriList = uris.collect { it.toString() }
    def metadata = entry.metaClass.respondsTo(entry, "getMetadata") ? entry.getMetadata() : entry.getMetadataMap()
    def record = new LinkedHashMap()
    record.put("entryID", entryId)
    record.put("imageName", entry.getImageName())
    record.put("uri", uriList.isEmpty() ? null : uriList[0])
    record.put("uris", uriList)
    if (isOpen) {
        def server = currentData.getServer()
        def cal = server.getPixelCalibration()
        record.put("pixelWidthMicrons", cal.hasPixelSizeMicrons() ? cal.getPixelWidthMicrons() : null)
        record.put("pixelHeightMicrons", cal.hasPixelSizeMicrons() ? cal.getPixelHeightMicrons() : null)
        record.put("width", server.getWidth())
        record.put("height", server.getHeight())
    }
    record.put("metadata", new LinkedHashMap(metadata == null ? [:] : metadata))
    record.put("annotations", entryId + ".geojson")
    record.put("nAnnotations", annotations.size())
    record.put("exportedAt", java.time.Instant.now().toString())
    records.add(record)
    println "qupath-rkd: exported " + annotations.size() + " annotation(s) of '" + entry.getImageName() + "'"
}
String qupathVersion = "unknown"
try {
    qupathVersion = String.valueOf(qupath.lib.common.GeneralTools.getVersion())
} catch (Throwable ignored) {
    // older QuPath: keep "unknown"
}
def manifest = new LinkedHashMap()
manifest.put("format", "qupath-rkd-annotations")
manifest.put("formatVersion", 1)
manifest.put("qupathVersion", qupathVersion)
manifest.put("images", records)
Path manifestTmp = annotationsDir.resolve(".manifest.json.tmp")
Files.write(manifestTmp, gson.toJson(manifest).getBytes(StandardCharsets.UTF_8))
Files.move(manifestTmp, annotationsDir.resolve("manifest.json"), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)

// 2. Run qupath-rkd sync (argument list, no shell).
List<String> command = [exe.getAbsolutePath(), "sync", projectDir.toString()]
command.addAll(EXTRA_ARGS.collect { String.valueOf(it) })
println "qupath-rkd: running " + command
def builder = new ProcessBuilder(command)
builder.redirectErrorStream(true)
builder.directory(projectDir.toFile())
def process = builder.start()
process.getOutputStream().close()
def output = process.getInputStream()
def pump = Thread.start {
    def reader = new BufferedReader(new InputStreamReader(output, StandardCharsets.UTF_8))
    String line
    while ((line = reader.readLine()) != null) {
        println line
    }
}
if (TIMEOUT_MINUTES > 0) {
    if (!process.waitFor(TIMEOUT_MINUTES, java.util.concurrent.TimeUnit.MINUTES)) {
        process.destroy()
        throw new RuntimeException("qupath-rkd: sync did not finish within " + TIMEOUT_MINUTES + " minutes; stopped it")
    }
} else {
    process.waitFor()
}
pump.join()
int exitCode = process.exitValue()
if (exitCode != 0) {
    // Stop before touching any image: a failed sync (bad input, Ctrl-C, a slide that failed)
    // must not re-import and save every image as if it had succeeded.
    throw new RuntimeException("qupath-rkd: sync failed (exit code " + exitCode + "; see its messages above): no image was changed. Fix what it reports and run this script again, or import what it completed with import_predictions.groovy")
}

// 3. Import predictions (and the slide-level values) into every image that has a file.
boolean metadataChanged = false
for (def entry : project.getImageList()) {
    Path file = predictionsDir.resolve(entry.getID() + ".geojson")
    if (!Files.isRegularFile(file)) {
        continue
    }
    def incoming = PathIO.readObjects(file.toFile())
    def keep = incoming.findAll { po ->
        po.isDetection() && isToolObject(po, TOOL_TAG) && (IMPORT_HEATMAP_TILES || !po.isTile())
    }
    Map slideValues = readSlideValues(predictionsDir.resolve(entry.getID() + ".slide.json"))
    boolean isOpen = currentEntry != null && currentEntry.getID() == entry.getID() && currentData != null
    def imageData = isOpen ? currentData : entry.readImageData()
    def hierarchy = imageData.getHierarchy()
    def old = hierarchy.getDetectionObjects().findAll { po -> isToolObject(po, TOOL_TAG) }
    hierarchy.removeObjects(old, true)
    hierarchy.addObjects(keep)
    if (slideValues != null) {
        applySlideValues(hierarchy, entry, slideValues)
        metadataChanged = true
    }
    if (isOpen) {
        fireHierarchyUpdate()
    }
    entry.saveImageData(imageData)
    println "qupath-rkd: '" + entry.getImageName() + "': removed " + old.size() + ", added " + keep.size()
}

if (metadataChanged) {
    project.syncChanges()  // the entry metadata lives in project.qpproj
}

/** The slide-level values sync wrote for an image (a Map), or null when there is no file. */
Map readSlideValues(Path slideFile) {
    if (!Files.isRegularFile(slideFile)) {
        return null
    }
    String text = new String(Files.readAllBytes(slideFile), StandardCharsets.UTF_8)
    Map values = GsonTools.getInstance().fromJson(text, Map.class)
    if (values == null || values.get("format") != "qupath-rkd-slide-values") {
        throw new IllegalArgumentException("qupath-rkd: " + slideFile + " is not a qupath-rkd slide-values file; run qupath-rkd sync again")
    }
    return values
}

/**
 * Put the slide-level values on the image (as import_predictions.groovy does): numbers as
 * measurements of the root object, strings as project-entry metadata; listed names removed first.
 */
void applySlideValues(def hierarchy, def entry, Map values) {
    def measurements = hierarchy.getRootObject().getMeasurementList()
    for (def name : values.get("measurementNames")) {
        measurements.remove(String.valueOf(name))
    }
    values.get("measurements").each { name, value ->
        measurements.put(String.valueOf(name), ((Number) value).doubleValue())
    }
    measurements.close()
    for (def key : values.get("metadataKeys")) {
        entry.removeMetadataValue(String.valueOf(key))
    }
    values.get("metadata").each { key, value ->
        entry.putMetadataValue(String.valueOf(key), String.valueOf(value))
    }
}

/** A detection qupath-rkd created: its name starts with the tool tag. Never an annotation. */
boolean isToolObject(def pathObject, String tag) {
    String name = pathObject.getName()
    return pathObject.isDetection() && name != null && name.startsWith(tag)
}
