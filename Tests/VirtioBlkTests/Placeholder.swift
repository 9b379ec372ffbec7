import Testing
@Test func virtioBlkTestsPlaceholder() {}
