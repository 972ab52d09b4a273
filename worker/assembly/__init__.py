"""Chapter assembly: segments stitched in reading order into chapter files, with levelling, pauses and dataset
exports. Torch-free. The assembler task (``f5tts.assemble_chapter``) runs it; ``f5-batch assemble`` calls it too."""
