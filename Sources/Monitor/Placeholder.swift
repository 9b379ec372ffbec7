// The QMP monitor (part 2).
