"""The ML side of finsentry: text normalisation, the two-head classifier, training and artifacts.

Nothing here imports Kafka, faust, HTTP or database code.
"""
