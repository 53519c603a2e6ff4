/**
 * qupath-rkd: import the predictions `qupath-rkd sync` wrote for this image (QuPath 0.5 / 0.6).
 *
 * Use: Automate > Script editor, open this file, Run > Run for project (select every image).
 *      Headless: QuPath script -p /path/to/project.qpproj --save import_predictions.groovy
 *
 * Reads <project>/qupath-rkd/predictions/N.geojson (N = this image's entry ID), a GeoJSON
 * FeatureCollection of detections in level-0 pixel coordinates:
 *   - lesions: detections classified (e.g. Tumor) with measurements such as the maximum and mean
 *     tumour probability and the area; one object per lesion (a lesion in several parts is a
 *     MultiPolygon, which PathIO reads as one object), named "qupath-rkd lesion N", unique;
 *   - optionally the heatmap: tile detections carrying a probability measurement; show it with
 *     Measure > Show measurement maps. Set IMPORT_HEATMAP_TILES = false to skip them.
 *   - where to annotate next: detections of class "qupath-rkd: annotate next" named
 *     "qupath-rkd suggestion N (reason)" with the measurements "Suggestion rank" (1 = first)
 *     and "Suggestion score"; they replace the previous suggestions like every prediction, and
 *     are listed below in rank order. Set IMPORT_SUGGESTIONS = false to skip them.
 * Slide-level values: <project>/qupath-rkd/predictions/N.slide.json (written by sync beside N.geojson)
 * holds the slide score, positive call, tumour area (mm^2), largest lesion's major axis (µm),
 * burden category and out-of-domain check. Its "measurements" (numbers) become measurements of
 * the image's root object (image measurements: Measure > Export measurements, export type Image)
 * and its "metadata" (strings) become project-entry metadata (sort or filter
 * the project pane by them). Every name listed in its "measurementNames" / "metadataKeys" is
 * removed first, so a value sync no longer gives is not left behind; the names are read from the
 * file (defined once in qupath_rkd/outputs.py). Set IMPORT_SLIDE_VALUES = false to skip them.
 * Every object qupath-rkd writes is a detection whose name starts with "qupath-rkd". Before
 * adding the new ones, this script removes ONLY detections (and tiles) named "qupath-rkd..." —
 * never annotations, never anything else. Rename a predicted detection to keep it.
 * Images without a predictions file are left untouched. The changed image is saved
 * (SAVE_IMAGE_DATA) so that Run for project and headless runs keep the result.
 */

import static qupath.lib.scripting.QP.*

import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.nio.file.Path
import qupath.lib.io.GsonTools
import qupath.lib.io.PathIO

// ---- parameters ------------------------------------------------------------------------
boolean IMPORT_HEATMAP_TILES = true
boolean IMPORT_SUGGESTIONS = true
boolean IMPORT_SLIDE_VALUES = true
String SUGGESTION_CLASS = "qupath-rkd: annotate next"
boolean SAVE_IMAGE_DATA = true
String TOOL_TAG = "qupath-rkd"
// -----------------------------------------------------------------------------------------

def entry = getProjectEntry()
def project = getProject()
if (entry == null || project == null) {
    throw new IllegalStateException("qupath-rkd: open a project and an image of it first")
}
Path projectDir = project.getPath().getParent()
String entryId = entry.getID()
Path file = projectDir.resolve("qupath-rkd").resolve("predictions").resolve(entryId + ".geojson")
if (!Files.isRegularFile(file)) {
    println "qupath-rkd: no predictions for '" + entry.getImageName() + "' (" + file + "); nothing changed"
    return
}

// Read everything first: if the file is bad, nothing in the image changes.
def incoming = PathIO.readObjects(file.toFile())
def keep = incoming.findAll { po ->
    po.isDetection() && isToolObject(po, TOOL_TAG) && (IMPORT_HEATMAP_TILES || !po.isTile()) &&
        (IMPORT_SUGGESTIONS || !isSuggestion(po, SUGGESTION_CLASS))
}
int skipped = incoming.size() - keep.size()
Path slideFile = file.resolveSibling(entryId + ".slide.json")
Map slideValues = IMPORT_SLIDE_VALUES ? readSlideValues(slideFile) : null

def hierarchy = getCurrentHierarchy()
def old = hierarchy.getDetectionObjects().findAll { po -> isToolObject(po, TOOL_TAG) }
hierarchy.removeObjects(old, true)
hierarchy.addObjects(keep)
if (slideValues != null) {
    applySlideValues(hierarchy, entry, slideValues)
}
fireHierarchyUpdate()

if (SAVE_IMAGE_DATA) {
    entry.saveImageData(getCurrentImageData())
}
if (slideValues != null) {
    project.syncChanges()  // the entry metadata lives in project.qpproj
}
println "qupath-rkd: '" + entry.getImageName() + "': removed " + old.size() + " earlier prediction(s), added " + keep.size() + (skipped > 0 ? " (skipped " + skipped + ")" : "")
if (slideValues != null) {
    println "qupath-rkd: '" + entry.getImageName() + "': slide values " + slideValues.get("metadata")
}

// The suggestions of this image in rank order (rank 1 = annotate first, across the project).
def suggestions = keep.findAll { po -> isSuggestion(po, SUGGESTION_CLASS) }
suggestions.sort { po -> po.getMeasurementList().get("Suggestion rank") }
for (def po : suggestions) {
    def roi = po.getROI()
    println "qupath-rkd: annotate next #" + (int) po.getMeasurementList().get("Suggestion rank") +
        " at x " + Math.round(roi.getCentroidX()) + ", y " + Math.round(roi.getCentroidY()) +
        " px: " + po.getName()
}

/** A detection qupath-rkd created: its name starts with the tool tag. Never an annotation. */
boolean isToolObject(def pathObject, String tag) {
    String name = pathObject.getName()
    return pathObject.isDetection() && name != null && name.startsWith(tag)
}

/** The slide-level values sync wrote for this image (a Map), or null when there is no file. */
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
 * Put the slide-level values on the image: numbers as measurements of the root object (image
 * measurements), strings as project-entry metadata. Every listed name is removed first.
 * QuPath API: PathObjectHierarchy.getRootObject(), MeasurementList.remove/put (0.4+),
 * ProjectImageEntry.removeMetadataValue/putMetadataValue.
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

/** A suggestion of where to annotate next (a detection of qupath-rkd's suggestion class). */
boolean isSuggestion(def pathObject, String className) {
    def pathClass = pathObject.getPathClass()
    return pathObject.isDetection() && pathClass != null && pathClass.toString() == className
}
