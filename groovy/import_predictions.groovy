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
 * Every object qupath-rkd writes is a detection whose name starts with "qupath-rkd". Before
 * adding the new ones, this script removes ONLY detections (and tiles) named "qupath-rkd..." —
 * never annotations, never anything else. Rename a predicted detection to keep it.
 * Images without a predictions file are left untouched. The changed image is saved
 * (SAVE_IMAGE_DATA) so that Run for project and headless runs keep the result.
 */

import static qupath.lib.scripting.QP.*

import java.nio.file.Files
import java.nio.file.Path
import qupath.lib.io.PathIO

// ---- parameters ------------------------------------------------------------------------
boolean IMPORT_HEATMAP_TILES = true
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
    po.isDetection() && isToolObject(po, TOOL_TAG) && (IMPORT_HEATMAP_TILES || !po.isTile())
}
int skipped = incoming.size() - keep.size()

def hierarchy = getCurrentHierarchy()
def old = hierarchy.getDetectionObjects().findAll { po -> isToolObject(po, TOOL_TAG) }
hierarchy.removeObjects(old, true)
hierarchy.addObjects(keep)
fireHierarchyUpdate()

if (SAVE_IMAGE_DATA) {
    entry.saveImageData(getCurrentImageData())
}
println "qupath-rkd: '" + entry.getImageName() + "': removed " + old.size() + " earlier prediction(s), added " + keep.size() + (skipped > 0 ? " (skipped " + skipped + ")" : "")

/** A detection qupath-rkd created: its name starts with the tool tag. Never an annotation. */
boolean isToolObject(def pathObject, String tag) {
    String name = pathObject.getName()
    return pathObject.isDetection() && name != null && name.startsWith(tag)
}
