"""The human preference study of Lego §5.3 / Table 2 "Human": create, serve, analyse.

    lego study create ...   lego study serve STUDY   lego study results STUDY

Modules: `stats` (Wilson CI, exact sign test, Fleiss' kappa), `model` (the study folder), `create`
(pairing image sets), `storage` (SQLite / PostgreSQL answers), `app` (FastAPI web app), `results`
(majority vote analysis + outputs), `mturk` (Mechanical Turk CSV export/import), `cli` (`lego study`).
The web app's dependencies (fastapi, uvicorn, jinja2, psycopg) are imported only by `serve`.
"""
