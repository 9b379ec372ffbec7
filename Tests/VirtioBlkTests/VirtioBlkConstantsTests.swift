import Testing
@testable import VirtioBlk

@Suite struct VirtioBlkConstantsTests {
    @Test func featureMasks() {
        #expect(VirtioBlkFeature.mask(VirtioBlkFeature.version1) == 0x1_0000_0000)
        #expect(VirtioBlkFeature.mask(VirtioBlkFeature.flush) == 0x200)
    }
}
