"""Small parallel medical MCQ and chat samples written by the globmed-edge team (see README.md here)."""
