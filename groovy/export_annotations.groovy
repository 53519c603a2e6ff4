/**
 * qupath-rkd: export this image's annotations for `qupath-rkd sync` (QuPath 0.5 / 0.6).
 *
 * Use: open the project, Automate > Script editor, open this file, then
 *      Run > Run for project (select every image). Headless:
 *      QuPath script -p /path/to/project.qpproj export_annotations.groovy
 *
 * Writes, for the current image (entry ID N):
 *   <project>/qupath-rkd/annotations/N.geojson   every annotation, as QuPath's own GeoJSON
 *                                                (FeatureCollection; level-0 pixel coordinates)
 *   <project>/qupath-rkd/annotations/manifest.json   one record per exported image:
 *       {"format": "qupath-rkd-annotations", "formatVersion": 1, "qupathVersion": "...",
 *        "images": [{"entryID", "imageName", "uri", "uris", "pixelWidthMicrons",
 *                    "pixelHeightMicrons", "width", "height", "metadata",
 *                    "annotations": "N.geojson", "nAnnotations", "exportedAt"}]}
 * Both files are written to a temporary file first and then moved into place, so a reader
 * never sees half a file. Nothing in the image or the project is changed.
 *
 * Per-image flags that qupath-rkd reads from the entry metadata (project pane, right click,
 * Edit metadata): qupath-rkd.tumor-free = true, qupath-rkd.fully-annotated = true.
 */

import static qupath.lib.scripting.QP.*

import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.StandardCopyOption
import qupath.lib.io.GsonTools

def entry = getProjectEntry()
def project = getProject()
if (entry == null || project == null) {
    throw new IllegalStateException("qupath-rkd: open a project and an image of it first (this script exports per project entry)")
}

Path projectDir = project.getPath().getParent()
Path outDir = projectDir.resolve("qupath-rkd").resolve("annotations")
Files.createDirectories(outDir)

String entryId = entry.getID()
def annotations = getAnnotationObjects()

// 1. The annotations, as QuPath writes GeoJSON (temp file + atomic move).
Path target = outDir.resolve(entryId + ".geojson")
Path tmp = outDir.resolve("." + entryId + ".geojson.tmp")
exportObjectsToGeoJson(annotations, tmp.toString(), "FEATURE_COLLECTION")
Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)

// 2. This image's record in the manifest (read, replace the record, write back atomically).
def server = getCurrentServer()
def cal = server.getPixelCalibration()
def uris = entry.metaClass.respondsTo(entry, "getURIs") ? entry.getURIs() : entry.getServerURIs()
def uriList = uris.collect { it.toString() }
def metadata = entry.metaClass.respondsTo(entry, "getMetadata") ? entry.getMetadata() : entry.getMetadataMap()
String qupathVersion = "unknown"
try {
    qupathVersion = String.valueOf(qupath.lib.common.GeneralTools.getVersion())
} catch (Throwable ignored) {
    // older QuPath: keep "unknown"
}

def record = new LinkedHashMap()
record.put("entryID", entryId)
record.put("imageName", entry.getImageName())
record.put("uri", uriList.isEmpty() ? null : uriList[0])
record.put("uris", uriList)
record.put("pixelWidthMicrons", cal.hasPixelSizeMicrons() ? cal.getPixelWidthMicrons() : null)
record.put("pixelHeightMicrons", cal.hasPixelSizeMicrons() ? cal.getPixelHeightMicrons() : null)
record.put("width", server.getWidth())
record.put("height", server.getHeight())
record.put("metadata", new LinkedHashMap(metadata == null ? [:] : metadata))
record.put("annotations", entryId + ".geojson")
record.put("nAnnotations", annotations.size())
record.put("exportedAt", java.time.Instant.now().toString())

// Run for project may run images on several threads: one manifest update at a time
// (an interned string is the same object across every script run in this JVM).
synchronized ("qupath-rkd manifest lock".intern()) {
    def gson = GsonTools.getInstance(true)
    Path manifestPath = outDir.resolve("manifest.json")
    def images = []
    if (Files.exists(manifestPath)) {
        try {
            def old = gson.fromJson(new String(Files.readAllBytes(manifestPath), StandardCharsets.UTF_8), Map.class)
            if (old != null && old.get("images") instanceof List) {
                images = old.get("images").findAll { it instanceof Map && String.valueOf(it.get("entryID")) != entryId }
            }
        } catch (Exception e) {
            println "qupath-rkd: " + manifestPath + " was unreadable (" + e.getMessage() + "); starting a new one"
        }
    }
    images.add(record)
    images.sort { a, b -> compareIds(String.valueOf(a.get("entryID")), String.valueOf(b.get("entryID"))) }

    def manifest = new LinkedHashMap()
    manifest.put("format", "qupath-rkd-annotations")
    manifest.put("formatVersion", 1)
    manifest.put("qupathVersion", qupathVersion)
    manifest.put("images", images)
    Path manifestTmp = outDir.resolve(".manifest.json.tmp")
    Files.write(manifestTmp, gson.toJson(manifest).getBytes(StandardCharsets.UTF_8))
    Files.move(manifestTmp, manifestPath, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)
}

println "qupath-rkd: exported " + annotations.size() + " annotation(s) of '" + entry.getImageName() + "' to " + target

/** Numeric entry IDs in numeric order, others after them by text. */
int compareIds(String a, String b) {
    boolean na = a.isInteger()
    boolean nb = b.isInteger()
    if (na && nb) {
        return Integer.compare(a.toInteger(), b.toInteger())
    }
    if (na != nb) {
        return na ? -1 : 1
    }
    return a.compareTo(b)
}
