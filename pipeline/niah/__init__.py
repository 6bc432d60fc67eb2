"""MH-NIAH-Video: multi-hop needle-in-a-video-haystack evaluation sets built from any corpus.

sources (videos of a build or of plain URIs) → needles (an image folder, or frames of videos kept out of haystacks)
→ plan (seeded: haystack videos, needle chain, depths, questions) → render (1 fps haystack + needle clips, written as
frame folders and/or bit-exact videos, one item per task) → items.jsonl + answers.jsonl; score grades predictions.
"""
