"""Demo front end: pure map builders (``demo.maps``) used by the Gradio app."""
