import Testing
@Test func OptionsTestsPlaceholder() {}
