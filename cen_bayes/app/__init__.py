"""A local collection app: people sort grids of images into groups in a browser, answers go to SQLite.

``python -m cen_bayes.app serve`` shows each person grids from a grids file
(``grids``), stores each answer in one SQLite transaction (``store``) and
answers the page's JSON API (``web``); ``python -m cen_bayes.app export``
writes the answers as the annotation table the models read
(``cen_bayes.annotations``). Which grid a person sees next is one swappable
function (``choose``). docs/collecting.md is the user's guide.
"""
