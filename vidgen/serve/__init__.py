"""`vidgen serve`: a local web page and API for making clips (docs/serve.md).

form.py   the page's fields -> a checked request, by the command line's rules
media.py  image and clip inputs, offered where the pipeline takes them
jobs.py   the loaded pipeline, one clip at a time, cancelling, the clips of this run
app.py    the Gradio page and the /generate endpoint (the only module that imports gradio)
"""
