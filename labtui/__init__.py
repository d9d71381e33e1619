"""labtui: a terminal lab console for ablation studies of small GPT models.

The version is the package metadata's: sessions.provenance.labtui_version().
"""
