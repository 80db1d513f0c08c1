import corpus_helper

print(corpus_helper.GREETING, corpus_helper.__file__)
