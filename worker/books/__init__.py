"""Books: the manifest records a producer writes for a book, and where a book stands. Torch-free and shared by the
producer, the assembler and the gateway."""
