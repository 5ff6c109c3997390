"""What the tests stand on: fakes of OpenAI, real servers started privately, raw HTTP."""
