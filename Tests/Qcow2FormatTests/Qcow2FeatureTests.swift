import Testing
@testable import Qcow2Format

/// Which features refuse an open, and how the refusal reads.
struct Qcow2FeatureTests {
    func check(_ image: Qcow2TestImage, readOnly: Bool = true) -> String {
        errorText {
            let header = try image.header()
            try header.features.check(header: header, readOnly: readOnly)
        }
    }

    @Test func namesEachUnsupportedFeature() {
        var image = Qcow2TestImage()
        image.cryptMethod = 2
        #expect(check(image).contains("encrypted"))
        image = Qcow2TestImage()
        image.incompatible = Qcow2Features.externalDataFile
        #expect(check(image).contains("external data file"))
        image = Qcow2TestImage()
        image.incompatible = Qcow2Features.extendedL2
        #expect(check(image).contains("extended L2"))
        image = Qcow2TestImage()
        image.incompatible = Qcow2Features.compressionType
        image.compressionType = 1
        #expect(check(image).contains("zstd"))
    }

    @Test func listsUnknownIncompatibleBitsWithTheirNamesFromTheImage() {
        var image = Qcow2TestImage()
        image.incompatible = 1 << 5 | 1 << 40
        image.extensions = [(Qcow2HeaderExtension.featureNameTable, Qcow2TestImage.featureName(type: 0, bit: 40, "teleport"))]
        let text = check(image)
        #expect(text.contains("bits 5, 40 (teleport)"), "\(text)")
    }

    @Test func corruptAndDirtyImagesOpenOnlyReadOnly() {
        var image = Qcow2TestImage()
        image.incompatible = Qcow2Features.corrupt
        #expect(check(image, readOnly: true) == "")
        #expect(check(image, readOnly: false).contains("marked corrupt"))
        image.incompatible = Qcow2Features.dirty
        #expect(check(image, readOnly: true) == "")
        #expect(check(image, readOnly: false).contains("qemu-img check -r all"))
    }

    @Test func acceptsLazyRefcountsAndUnknownCompatibleBits() {
        var image = Qcow2TestImage()
        image.compatible = Qcow2Features.lazyRefcounts | 1 << 9
        image.autoclear = 1 << 3
        #expect(check(image, readOnly: false) == "")
    }
}
