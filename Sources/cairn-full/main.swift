// The cairn command: parse the arguments and run the command (Cairn.swift).
Cairn.runMain()
