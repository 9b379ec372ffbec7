import BlockCommon
import BlockGraph
import ControlThread
import Glibc
import Testing

/// The second line behind the compiler: a GS function reached off the control thread
/// (here by deliberately stripping its isolation) stops the process with a clear message.
/// (The first line, the compile error, is checked in Tests/guest/test_gs_discipline.py.)
@Suite struct GSDisciplineTests {
    @Test func gsFunctionOffTheControlThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let graph = await BlockGraph()
            typealias Open = (BlockdevOptions) throws -> Void
            let isolated: @ControlActor (BlockdevOptions) throws -> Void = { try graph.openNode($0) }
            let stripped = unsafeBitCast(isolated, to: Open.self)
            try? stripped(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        }
    }

    @Test @ControlActor func gsFunctionOnTheControlThreadRuns() throws {
        let graph = BlockGraph()
        try graph.openNode(BlockdevOptions(nodeName: NodeName("n"), driver: .null(NullOptions())))
        #expect(ControlActor.isOnControlThread)
        try graph.closeNode(NodeName("n"))
    }
}
