"""Bridges from other pipeline libraries to flowhooks handlers, one module per library.

Each module needs its library (a flowhooks extra) and is imported on its own:
``flowhooks.integrations.langchain`` (extra ``langchain``),
``flowhooks.integrations.hamilton`` (extra ``hamilton``). Importing this
package imports none of them.
"""
