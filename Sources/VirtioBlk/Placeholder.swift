// VirtioBlk
