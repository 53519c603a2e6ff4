// Parse-only check of Groovy scripts (used by tests/groovy): compiles each file given to the
// CONVERSION phase (syntax + AST, no class resolution, so QuPath classes need not be present).
// Prints "OK <path>" or "FAIL <path>: <message>"; exits 1 if any failed.
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.Phases
import org.codehaus.groovy.control.CompilationFailedException
int failures = 0
for (String path : args) {
    def unit = new CompilationUnit(new CompilerConfiguration())
    unit.addSource(new File(path))
    try {
        unit.compile(Phases.CONVERSION)
        println "OK " + path
    } catch (CompilationFailedException e) {
        failures++
        System.err.println("FAIL " + path + ": " + e.getMessage())
    }
}
System.exit(failures == 0 ? 0 : 1)
